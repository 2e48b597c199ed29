//! The `sluice-bench` binary: its subcommands parse, and a short real run of `load`
//! against `app`, steered by `control`, works end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
}

#[test]
fn help_lists_the_subcommands_and_their_flags() {
    let out = bench().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["app", "load", "control"] {
        assert!(text.contains(sub), "{text}");
    }
    let out = bench().args(["load", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--stream",
        "--duration-s",
        "--max-connections",
        "--json",
        "--threads",
    ] {
        assert!(text.contains(flag), "{text}");
    }
    let bad = bench()
        .args(["load", "--stream", "rate=oops"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let bad = bench()
        .args(["app", "--mode", "sideways"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn load_against_app_end_to_end() {
    let mut app = bench()
        .args([
            "app",
            "--addr",
            "127.0.0.1:0",
            "--capacity",
            "4",
            "--service-ms",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open to the end: the app prints its stats when it stops.
    let mut stdout = BufReader::new(app.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();

    let out = bench()
        .args(["control", "--target", &addr, r#"{"capacity":8}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""capacity":8"#));

    let json = std::env::temp_dir().join(format!("sluice-bench-{}.json", std::process::id()));
    let out = bench()
        .args([
            "load",
            "--target",
            &addr,
            "--duration-s",
            "0.5",
            "--timeout-s",
            "2",
        ])
        .args([
            "--stream",
            "name=critical,rate=40,path=/a,method=POST,header=x-priority:critical",
        ])
        .args(["--stream", "name=low,rate=20"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        table.contains("critical") && table.contains("p99"),
        "{table}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(report["streams"][0]["successes"], 20, "{report}");
    assert_eq!(report["streams"][1]["successes"], 10, "{report}");

    let pid = app.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = app.try_wait().unwrap() {
            assert!(status.success());
            let mut last = String::new();
            stdout.read_line(&mut last).unwrap();
            assert!(
                last.contains("SIGTERM") && last.contains(r#""received":30"#),
                "{last}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "app did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
