//! A fleet of simulated browser extensions for the benchmark. It opens `--idle`
//! sessions on keys of their own and `--devices` sessions on `--key`, all of them
//! authenticating, reporting WhatsApp Web ready and answering pings; the devices
//! also answer every send command at once with a success.
//!
//! Talks to its driver by lines: prints `ready {...}` once every session is up;
//! reads `cpu` (prints `cpu {...}`, its CPU time so far), `close` (closes every
//! session, prints `closed {...}`) and `exit` or end of input (prints `stats {...}`
//! with its own CPU time, and exits).
//!
//! One thread: the fleet must cost less than what it measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

struct Options {
    url: String,
    key: String,
    devices: usize,
    idle: usize,
    /// `v1`, `doc` or `guide`: the auth and status frames the fleet sends.
    dialect: String,
}

fn options() -> Options {
    let mut o = Options {
        url: String::new(),
        key: "bench-key-000001".into(),
        devices: 1,
        idle: 0,
        dialect: "v1".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => o.url = value,
            "--key" => o.key = value,
            "--devices" => o.devices = value.parse().unwrap_or(1),
            "--idle" => o.idle = value.parse().unwrap_or(0),
            "--dialect" => o.dialect = value,
            other => {
                eprintln!("fleet: unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    if o.url.is_empty() {
        eprintln!("usage: fleet --url ws://127.0.0.1:PORT/wa-ext-ws [--key K] [--devices D] [--idle N] [--dialect v1|doc|guide]");
        std::process::exit(2);
    }
    o
}

#[derive(Default)]
struct Counters {
    results: AtomicU64,
    bytes_in: AtomicU64,
}

/// Connects, authenticates and reports ready; then answers until told to close.
async fn session(
    url: Arc<str>,
    key: String,
    dialect: Arc<str>,
    counters: Arc<Counters>,
    mut close: watch::Receiver<bool>,
    up: tokio::sync::mpsc::Sender<()>,
) {
    let Some((host, _)) = url.trim_start_matches("ws://").split_once('/') else {
        return;
    };
    let Ok(tcp) = TcpStream::connect(host).await else {
        eprintln!("fleet: connect failed");
        return;
    };
    let _ = tcp.set_nodelay(true);
    // Small reads keep 20k idle sessions cheap; media frames grow the buffer.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let Ok((mut ws, _)) =
        tokio_tungstenite::client_async_with_config(&*url, tcp, Some(config)).await
    else {
        eprintln!("fleet: handshake failed");
        return;
    };
    let auth = match &*dialect {
        "guide" => json!({ "type": "authenticate", "apiKey": key }),
        _ => {
            json!({ "type": "auth", "apiKey": key, "data": { "extensionVersion": "bench", "browser": "fleet" } })
        }
    };
    let status = match &*dialect {
        "guide" => {
            json!({ "type": "status", "status": "WhatsApp Web is logged in", "ready": true })
        }
        _ => json!({ "type": "status", "data": { "whatsappLoggedIn": true, "ready": true } }),
    };
    if ws.send(Message::text(auth.to_string())).await.is_err() {
        return;
    }
    // Wait for the auth reply before reporting ready.
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t)))
                if t.contains("\"auth-success\"") || t.contains("\"authenticated\"") =>
            {
                break
            }
            Some(Ok(Message::Text(t))) if t.contains("\"error\"") => {
                eprintln!("fleet: auth refused: {t}");
                return;
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    }
    if ws.send(Message::text(status.to_string())).await.is_err() {
        return;
    }
    let _ = up.send(()).await;
    drop(up);
    loop {
        tokio::select! {
            _ = close.changed() => {
                let _ = ws.close(None).await;
                return;
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                counters.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
                let reply = if text.starts_with("{\"type\":\"ping\"") {
                    r#"{"type":"heartbeat"}"#.to_string()
                } else if let Some(id) = request_id(&text) {
                    counters.results.fetch_add(1, Ordering::Relaxed);
                    format!(r#"{{"type":"message-result","requestId":"{id}","success":true,"messageId":"m"}}"#)
                } else {
                    continue;
                };
                if ws.send(Message::text(reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The request id of a send command, found without parsing a frame that may be
/// megabytes of media (both v1 and v2 put it near the start).
fn request_id(frame: &str) -> Option<&str> {
    const FIELD: &str = "\"requestId\":\"";
    let start = frame.find(FIELD)? + FIELD.len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

fn cpu_ms() -> (f64, f64) {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            * 10.0
    };
    (tick(11), tick(12))
}

fn main() {
    let opts = options();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(run(opts));
}

async fn run(opts: Options) {
    let url: Arc<str> = opts.url.into();
    let dialect: Arc<str> = opts.dialect.into();
    let counters = Arc::new(Counters::default());
    let (close_tx, close_rx) = watch::channel(false);
    let total = opts.idle + opts.devices;
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel(total.max(1));
    // Bounded connects in flight measure the gateway's accept and auth rate, not the
    // kernel's SYN backlog.
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let keys = (0..opts.idle)
        .map(|i| format!("idle-key-{i:08}"))
        .chain(std::iter::repeat_n(opts.key.clone(), opts.devices));
    for key in keys {
        let (url, dialect, counters, close, up, gate) = (
            url.clone(),
            dialect.clone(),
            counters.clone(),
            close_rx.clone(),
            up_tx.clone(),
            gate.clone(),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1);
            let task = tokio::spawn(session(url, key, dialect, counters, close, ready_tx));
            if ready_rx.recv().await.is_some() {
                drop(permit);
                let _ = up.send(()).await;
            }
            let _ = task.await;
        });
    }
    drop(up_tx);
    let mut ready = 0;
    while ready < total && up_rx.recv().await.is_some() {
        ready += 1;
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "ready {}",
        json!({ "sessions": ready, "connectMs": connect_ms })
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "close" => {
                let t = Instant::now();
                let _ = close_tx.send(true);
                tokio::time::sleep(Duration::from_millis(1)).await;
                println!(
                    "closed {}",
                    json!({ "ms": t.elapsed().as_secs_f64() * 1000.0 })
                );
            }
            "cpu" => {
                let (user, sys) = cpu_ms();
                println!("cpu {}", json!({ "cpuUserMs": user, "cpuSysMs": sys }));
            }
            "exit" => break,
            _ => {}
        }
    }
    let (user, sys) = cpu_ms();
    println!(
        "stats {}",
        json!({
            "cpuUserMs": user,
            "cpuSysMs": sys,
            "results": counters.results.load(Ordering::Relaxed),
            "bytesIn": counters.bytes_in.load(Ordering::Relaxed),
        })
    );
}
