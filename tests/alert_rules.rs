//! The shipped Prometheus alerting rules: valid for promtool, and every metric they use
//! is one sluice exports (a renamed metric must not silently disarm an alert).

use std::path::Path;
use std::process::Command;

const RULES: &str = "deploy/prometheus/sluice-alerts.yaml";

#[test]
fn alert_rules_pass_promtool() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join(RULES))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var("CI").is_ok() => {
            panic!(
                "promtool is not installed ({e}): .ci/run installs the Debian package prometheus"
            )
        }
        Err(e) => eprintln!("promtool not run: {e}"),
    }
}

/// Every `name` in `"name"` string literals under `src/`.
fn exported_names(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            exported_names(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("read source"));
        }
    }
}

#[test]
fn alert_rules_use_only_metrics_sluice_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join(RULES)).expect("rules file");
    let mut sources = String::new();
    exported_names(&root.join("src"), &mut sources);
    let mut used: Vec<&str> = rules
        .match_indices("sluice_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(
        used.len() >= 8,
        "expected the rules to use sluice's metrics: {used:?}"
    );
    for name in used {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "{RULES} uses {name}, which sluice does not export"
        );
    }
}
