//! The `sluice` binary as an operator runs it: `--check-config`, environment overrides,
//! start-up with the root config and no app, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Start from a clean slate: none of the seed's variables leak in from the caller.
    for var in [
        "CONCURRENCY_ENABLED",
        "MAX_CONCURRENT_DB_OPS",
        "MAX_CONCURRENT_HTTP_OPS",
        "MAX_CONCURRENT_CACHE_OPS",
        "WORKER_POOL_SIZE_DB",
        "WORKER_POOL_SIZE_HTTP",
        "WORKER_POOL_SIZE_CACHE",
        "REQUEST_TIMEOUT_SECONDS",
        "HEALTH_CHECK_INTERVAL",
        "SLUICE_ADMIN_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

fn root_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_config_accepts_the_root_config() {
    let out = sluice()
        .arg("--check-config")
        .arg(root_config())
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn check_config_lists_every_problem_with_its_line() {
    let path = write_temp(
        "bad.toml",
        "[listener]\naddr = \"not-an-address\"\n\n[upstream]\nrequest_timeout_ms = 0\nbogus_key = 1\n\n[[routes]]\nname = \"r\"\npath_regex = \"([unclosed\"\nclass = \"nope\"\n",
    );
    let out = sluice()
        .arg("--check-config")
        .arg(&path)
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = path.display().to_string();
    for (line, what) in [
        (2, "listener.addr"),
        (5, "upstream.request_timeout_ms"),
        (6, "bogus_key"),
        (10, "path_regex"),
        (11, "class"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(what)),
            "expected a problem at line {line} about {what}; got:\n{err}"
        );
    }
    assert!(err.contains("5 problem(s)"), "{err}");
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let out = sluice()
        .arg("--check-config")
        .arg(root_config())
        .env("MAX_CONCURRENT_DB_OPS", "lots")
        .env("REQUEST_TIMEOUT_SECONDS", "-3")
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MAX_CONCURRENT_DB_OPS") && err.contains("lots"),
        "{err}"
    );
    assert!(err.contains("REQUEST_TIMEOUT_SECONDS"), "{err}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = sluice()
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/sluice.toml"), "{err}");
}

/// The README's promise: with the root config and no app, sluice starts, answers its own
/// endpoints, gives proxied requests an honest 502, and drains on SIGTERM.
#[tokio::test]
async fn root_config_starts_without_an_app_and_stops_on_sigterm() {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let (main, obs, app) = (
        free().expect("port"),
        free().expect("port"),
        free().expect("port"),
    );
    let text = std::fs::read_to_string(root_config()).expect("root config");
    let text = common::harness::set(&text, "listener", "addr", &format!("\"{main}\""));
    let text = common::harness::set(&text, "observability", "addr", &format!("\"{obs}\""));
    let text = common::harness::set(&text, "upstream", "addr", &format!("\"{app}\""));
    let path = write_temp("root-copy.toml", &text);
    let mut child = sluice()
        .arg("--config")
        .arg(&path)
        .env("SLUICE_LOG", "info")
        .env("MAX_CONCURRENT_DB_OPS", "70")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(obs).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sluice exited early ({status}): {}",
                logs.join().unwrap_or_default().join("\n")
            );
        }
        assert!(Instant::now() < deadline, "sluice did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = common::Http1Client::get(obs, "/healthz", &[]).await;
    assert_eq!(status, 200);
    let (status, _, body) = common::Http1Client::get(obs, "/readyz", &[]).await;
    assert_eq!(
        status,
        503,
        "no app: not ready ({})",
        String::from_utf8_lossy(&body)
    );
    let (status, headers, _) = common::Http1Client::get(main, "/api/v1/words", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-sluice-reason"], "upstream_connect_failed");
    let (status, _, body) =
        common::Http1Client::get(main, "/api/v1/performance/concurrency", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["classes"]["db"]["limit"]["max"], 70,
        "env override applied"
    );

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sluice did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let logs = logs.join().expect("logs").join("\n");
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(!logs.contains("Bearer"), "no credentials in logs");
}
