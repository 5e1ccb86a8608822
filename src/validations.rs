//! `validateApiKey` calls. A connection waiting for its key check queues it here; the
//! outbox's wake-up (`outbox`) hands every queued check to JavaScript at once, which
//! answers each through `NativeGateway::validated` / `validation_failed`. A threadsafe
//! function call per check (as before) cost a queue lock round, a JavaScript call frame
//! and a wake-up of its own each, and its promise another two napi callbacks: a connect
//! storm paid them all per connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use napi::bindgen_prelude::{JsValue, ToNapiValue};
use napi::Env;
use serde_json::Value;
use tokio::sync::oneshot;
use wa_gateway_core::{lock, AuthAnswer};

type Outcome = Result<AuthAnswer, String>;

/// The checks queued for JavaScript and the connections waiting for their answers.
#[derive(Default)]
pub struct Validations {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Token and API key of each check JavaScript has not taken yet.
    queued: Vec<(u32, String)>,
    waiting: HashMap<u32, oneshot::Sender<Outcome>>,
    next_token: u32,
}

impl Validations {
    /// Queues a check of `api_key`; also whether the queue was empty before, in which
    /// case JavaScript has to be called to take it (the outbox's rule).
    pub fn ask(self: &Arc<Self>, api_key: String) -> (bool, Answer) {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.state);
        let token = state.next_token;
        state.next_token = token.wrapping_add(1);
        state.waiting.insert(token, tx);
        state.queued.push((token, api_key));
        let first = state.queued.len() == 1;
        drop(state);
        let answer = Answer {
            token: Some(token),
            checks: self.clone(),
            rx,
        };
        (first, answer)
    }

    /// What JavaScript answered (or why it could not); ignored once the connection
    /// stopped waiting (auth timeout, gone, shutdown).
    pub fn answer(&self, token: u32, outcome: Outcome) {
        let waiting = lock(&self.state).waiting.remove(&token);
        if let Some(tx) = waiting {
            let _ = tx.send(outcome);
        }
    }

    pub fn answer_valid(
        &self,
        token: u32,
        valid: bool,
        user_id: Option<Value>,
        reason: Option<String>,
    ) {
        let answer = AuthAnswer {
            valid,
            user_id: user_id.unwrap_or(Value::Null),
            reason,
        };
        self.answer(token, Ok(answer));
    }
}

/// One connection's wait for its answer; dropping it stops the wait.
pub struct Answer {
    /// None once answered: nothing left to remove.
    token: Option<u32>,
    checks: Arc<Validations>,
    rx: oneshot::Receiver<Outcome>,
}

impl Future for Answer {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let received = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.token = None;
        Poll::Ready(
            received.unwrap_or_else(|_| {
                Err("the gateway stopped before validateApiKey answered".into())
            }),
        )
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            lock(&self.checks.state).waiting.remove(&token);
        }
    }
}

/// The checks JavaScript takes at once: token and API key of each, flat (`undefined`
/// when there are none).
pub struct Checks(Vec<(u32, String)>);

impl Checks {
    pub fn take(checks: &Validations) -> Self {
        Self(std::mem::take(&mut lock(&checks.state).queued))
    }
}

impl ToNapiValue for Checks {
    unsafe fn to_napi_value(
        raw_env: napi::sys::napi_env,
        checks: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        if checks.0.is_empty() {
            return <()>::to_napi_value(raw_env, ());
        }
        let env = Env::from_raw(raw_env);
        let mut items = env.create_array(0)?;
        for (token, api_key) in checks.0 {
            items.insert(token)?;
            items.insert(api_key)?;
        }
        Ok(items.raw())
    }
}
