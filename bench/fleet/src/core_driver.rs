//! Round trips driven from Rust straight through the gateway core, without Node, so
//! that the cost of the JavaScript boundary is a number. Same runtime shape as the
//! addon (its default worker count, `WA_GATEWAY_THREADS` to change), same fleet
//! process as the JavaScript runs.
//!
//! Usage: core-driver --fleet PATH [--devices D] [--concurrency C] [--calls N] [--idle I]
//! Prints one JSON line: calls/s, p50/p99 in microseconds, CPU per call of this process.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wa_gateway_core::{
    build_runtime, AuthAnswer, Config, Delivery, Gateway, Host, SendKind, SendRequest, Validation,
};

struct ChannelHost(std::sync::Mutex<mpsc::Sender<(u64, bool)>>);

impl Host for ChannelHost {
    fn deliver(&self, delivery: Delivery) {
        let outcome = match delivery {
            Delivery::Resolved(r) => (r.id, true),
            Delivery::Rejected { call, .. } => (call, false),
            _ => return,
        };
        let _ = self.0.lock().map(|tx| tx.send(outcome));
    }
    fn validate(&self, _api_key: String) -> Validation {
        Box::pin(async {
            Ok(AuthAnswer {
                valid: true,
                ..AuthAnswer::default()
            })
        })
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) * 10.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fleet_path = arg("--fleet", "");
    let devices: usize = arg("--devices", "1").parse()?;
    let concurrency: usize = arg("--concurrency", "64").parse()?;
    let calls: usize = arg("--calls", "100000").parse()?;
    let idle: usize = arg("--idle", "0").parse()?;
    let key = "bench-key-000001";

    let rt = build_runtime()?;
    let (tx, rx) = mpsc::channel();
    let config = Config {
        port: 0,
        host: Some("127.0.0.1".into()),
        max_sessions_per_key: devices.max(10),
        ..Config::default()
    };
    let gateway = Gateway::new(
        config,
        Arc::new(ChannelHost(std::sync::Mutex::new(tx))),
        rt.handle().clone(),
    )?;
    let addr = gateway.start()?;

    let mut fleet = Command::new(&fleet_path)
        .args(["--url", &format!("ws://{addr}/wa-ext-ws"), "--key", key])
        .args([
            "--devices",
            &devices.to_string(),
            "--idle",
            &idle.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut fleet_out = BufReader::new(fleet.stdout.take().ok_or("no fleet stdout")?);
    let mut line = String::new();
    fleet_out.read_line(&mut line)?;
    if !line.starts_with("ready") {
        return Err(format!("fleet did not get ready: {line}").into());
    }
    // The status frames may still be in flight when the fleet says ready.
    while gateway
        .sessions(key)
        .iter()
        .filter(|s| s.device_active)
        .count()
        < devices
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    let request = || {
        let text = "benchmark message".into();
        SendRequest::new(SendKind::Message, key.into(), "+1234567890".into(), text)
    };
    let mut sent_at = vec![Instant::now(); concurrency];
    let mut latencies = Vec::with_capacity(calls);
    let mut failures = 0;
    let (cpu0, t0) = (cpu_ms(), Instant::now());
    let mut submitted = 0;
    for (slot, sent) in sent_at.iter_mut().enumerate().take(calls) {
        *sent = Instant::now();
        gateway.send(slot as u64, request());
        submitted += 1;
    }
    while latencies.len() + failures < calls {
        // Like the JavaScript side, send what was queued once there is nothing to read.
        let (slot, ok) = match rx.try_recv() {
            Ok(outcome) => outcome,
            Err(_) => {
                gateway.flush();
                rx.recv_timeout(Duration::from_secs(30))?
            }
        };
        let slot = slot as usize;
        if ok {
            latencies.push(sent_at[slot].elapsed());
        } else {
            failures += 1;
        }
        if submitted < calls {
            sent_at[slot] = Instant::now();
            gateway.send(slot as u64, request());
            submitted += 1;
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_ms() - cpu0;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };

    let mut stdin = fleet.stdin.take().ok_or("no fleet stdin")?;
    writeln!(stdin, "exit")?;
    let mut fleet_stats = Value::Null;
    for line in fleet_out.lines() {
        let line = line?;
        if let Some(stats) = line.strip_prefix("stats ") {
            fleet_stats = serde_json::from_str(stats)?;
        }
    }
    let _ = fleet.wait();
    gateway.stop();
    let fleet_cpu = fleet_stats["cpuUserMs"].as_f64().unwrap_or(0.0)
        + fleet_stats["cpuSysMs"].as_f64().unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "calls": latencies.len(),
            "failures": failures,
            "callsPerSec": latencies.len() as f64 / wall.as_secs_f64(),
            "p50Us": pct(0.50),
            "p99Us": pct(0.99),
            "cpuUsPerCall": cpu * 1000.0 / calls as f64,
            "fleetCpuUsPerCall": fleet_cpu * 1000.0 / calls as f64,
        })
    );
    Ok(())
}
