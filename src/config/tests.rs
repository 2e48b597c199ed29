use std::collections::HashMap;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn load(src: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(src, "config.toml", &no_env)
}

fn errors(src: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
    match Config::from_toml_str(src, "config.toml", env) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0,
    }
}

/// (line, path) of each error, for compact assertions.
fn placed(errs: &[ConfigError]) -> Vec<(Option<usize>, &str)> {
    errs.iter().map(|e| (e.line, e.path.as_str())).collect()
}

fn class_name(c: &Config, route: &RouteConfig) -> String {
    c.classes[route.class].name.clone()
}

/// First-match classification by the real classifier.
fn classify<'a>(
    c: &'a Config,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> &'a RouteConfig {
    let method: http::Method = method.parse().unwrap();
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        map.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let classifier = crate::classify::Classifier::new(c.routes.clone()).unwrap();
    &c.routes[classifier.classify(&method, path, &map).route]
}

#[test]
fn empty_file_gives_a_working_config() {
    let c = load("").unwrap();
    let names: Vec<_> = c.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cache", "db", "http"]);
    let max: Vec<_> = c.classes.iter().map(|c| c.max_concurrent).collect();
    assert_eq!(max, [200, 100, 50]);
    assert!(c.classes.iter().all(|k| k.min_concurrent >= 1
        && k.min_concurrent <= k.max_concurrent
        && k.adaptive
        && k.queue_timeout == Duration::from_millis(5000)));
    assert_eq!(c.routes.len(), 1);
    let d = &c.routes[0];
    assert_eq!(d.name, "default");
    assert_eq!(class_name(&c, d), "db");
    assert_eq!(d.priority, Priority::Normal);
    assert_eq!(d.timeout, Duration::from_secs(14));
    assert!(matches!(d.path, PathMatch::Any));
    assert_eq!(c.listener.addr.to_string(), "0.0.0.0:8080");
    assert!(c.listener.max_header_bytes >= 8192);
    assert_eq!(
        c.observability.addr.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(c.upstream.addr, "127.0.0.1:8000");
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(90));
    assert!(c.admin.token.is_none());
    assert!(c.concurrency.enabled);
    assert_eq!(c.health.path, "/health/ready");
    assert_eq!(c.health.interval, Duration::from_secs(10));
    assert_eq!(c.circuit_breaker.failure_threshold, 5);
}

#[test]
fn observability_can_be_disabled() {
    let c = load("[observability]\naddr = \"\"\nlog_format = \"json\"\n").unwrap();
    assert!(c.observability.addr.is_none());
    assert_eq!(c.observability.log_format, LogFormat::Json);
}

const ROOT: &str = include_str!("../../config.toml");

fn root() -> Config {
    let env = env_of(&[("SLUICE_ADMIN_TOKEN", "s3cret")]);
    Config::from_toml_str(ROOT, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn root_config_loads_and_routes_the_toeic_app() {
    let c = root();
    assert_eq!(c.admin.token.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(c.routes.last().map(|r| r.name.as_str()), Some("default"));
    let cases = [
        ("GET", "/health", "app-probes"),
        ("GET", "/health/ready", "app-probes"),
        ("GET", "/prometheus", "app-probes"),
        ("GET", "/metrics", "app-probes"),
        ("GET", "/health/detailed", "monitoring"),
        ("GET", "/api/monitoring/db", "monitoring"),
        ("GET", "/api/v1/alerts", "monitoring"),
        ("GET", "/api/v1/upgrade/ws", "websocket"),
        ("POST", "/api/auth/login", "auth"),
        ("POST", "/api/v1/auth/refresh-token", "auth"),
        ("POST", "/api/auth/logout", "auth"),
        ("POST", "/api/auth/register", "sign-up"),
        ("POST", "/api/v1/users", "sign-up"),
        ("POST", "/api/v1/exam-attempts", "exam-writes"),
        ("PUT", "/api/v1/exam-attempts/42/complete", "exam-writes"),
        ("POST", "/api/v1/user-answers/bulk", "exam-writes"),
        (
            "POST",
            "/api/v1/learning/sessions/7/attempts",
            "exam-writes",
        ),
        ("GET", "/api/v1/exam-attempts/42", "exam-reads"),
        ("GET", "/api/v1/exams/3/questions", "exam-reads"),
        ("GET", "/api/v1/users/me", "exam-reads"),
        ("GET", "/api/v1/exam-attempts/stats", "heavy-reads"),
        ("GET", "/api/v1/words/search", "heavy-reads"),
        ("GET", "/api/v1/exams/3/leaderboard", "heavy-reads"),
        ("POST", "/api/v1/writing/score", "external"),
        ("POST", "/api/v1/ai/explain", "external"),
        ("POST", "/api/v1/upload/audio", "external"),
        ("POST", "/api/v1/admin/backups", "admin"),
        ("GET", "/api/v1/rbac/roles", "admin"),
        ("GET", "/api/v1/words/12", "browsing"),
        ("GET", "/api/v1/something-else", "default"),
    ];
    for (method, path, want) in cases {
        assert_eq!(
            classify(&c, method, path, &[]).name,
            want,
            "{method} {path}"
        );
    }
    let probe = classify(&c, "GET", "/health/live", &[]);
    assert!(probe.bypass);
    let login = classify(&c, "POST", "/api/auth/login", &[]);
    assert_eq!(
        (login.priority, class_name(&c, login).as_str()),
        (Priority::Critical, "db")
    );
    let ai = classify(&c, "POST", "/api/v1/ai/explain", &[]);
    assert_eq!(
        (ai.priority, class_name(&c, ai).as_str()),
        (Priority::Low, "http")
    );
    let admin = classify(&c, "GET", "/api/v1/admin/x", &[]);
    assert_eq!(
        (admin.priority, class_name(&c, admin).as_str()),
        (Priority::Background, "admin")
    );
    let ws = classify(&c, "GET", "/api/v1/upgrade/ws", &[]);
    assert_eq!(class_name(&c, ws), "ws");
}

#[test]
fn root_config_without_the_admin_token_loads_with_the_admin_api_off() {
    let c = load(ROOT).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.admin.token.is_none());
    let why = c.admin.disabled.unwrap_or_default();
    assert!(why.contains("SLUICE_ADMIN_TOKEN"), "{why}");
}

#[test]
fn first_match_wins_in_file_order() {
    let src = r#"
[[routes]]
name = "vip"
headers = { "X-Priority" = "critical" }
path_prefix = "/api"
priority = "critical"

[[routes]]
name = "api"
path_prefix = "/api"
priority = "low"
timeout_ms = 2000

[[routes]]
name = "never"
path_prefix = "/api/v1"
priority = "high"
"#;
    let c = load(src).unwrap();
    let names: Vec<_> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["vip", "api", "never", "default"]);
    assert_eq!(
        classify(&c, "GET", "/api/v1/x", &[("x-priority", "critical")]).name,
        "vip"
    );
    assert_eq!(
        classify(&c, "GET", "/api/v1/x", &[("x-priority", "high")]).name,
        "api"
    );
    assert_eq!(classify(&c, "GET", "/other", &[]).name, "default");
    assert_eq!(c.routes[1].timeout, Duration::from_millis(2000));
    assert_eq!(c.routes[0].timeout, c.upstream.request_timeout);
    // Rules without a class take the default route's.
    assert_eq!(class_name(&c, &c.routes[0]), "db");
}

#[test]
fn three_problems_three_lines() {
    let src = r#"[upstream]
pool_idle_timeout_ms = 120000

[classes.db]
max_concurrent = 10
min_concurrent = 20

[[routes]]
name = "a"

[[routes]]
name = "b"
path_regex = "^/api/(unclosed"
"#;
    let errs = errors(src, &no_env);
    assert_eq!(
        placed(&errs),
        [
            (Some(2), "upstream.pool_idle_timeout_ms"),
            (Some(6), "classes.db.min_concurrent"),
            (Some(13), "routes[1].path_regex"),
        ],
        "{errs:?}"
    );
    let shown = ConfigErrors(errs).to_string();
    let lines: Vec<_> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[2].starts_with("config.toml:13: routes[1].path_regex: invalid regex: "),
        "{shown}"
    );
}

#[test]
fn many_route_problems_are_all_reported() {
    let src = r#"
[[routes]]
name = "Bad Name"
methods = ["get"]
class = "nope"
priority = "urgent"
path_prefix = "api"
headers = { "bad header" = "x" }

[[routes]]
name = "dup"
path_prefix = "/a"
path_regex = "^/a"
timeout_ms = 0

[[routes]]
name = "dup"

[[routes]]
priority = "low"

[default_route]
class = "missing"
"#;
    let errs = errors(src, &no_env);
    let got = placed(&errs);
    let want = [
        (Some(3), "routes[0].name"),
        (Some(4), "routes[0].methods[0]"),
        (Some(5), "routes[0].class"),
        (Some(6), "routes[0].priority"),
        (Some(7), "routes[0].path_prefix"),
        (Some(8), "routes[0].headers.bad header"),
        (Some(13), "routes[1].path_regex"),
        (Some(14), "routes[1].timeout_ms"),
        (Some(17), "routes[2].name"),
        (Some(19), "routes[3]"),
        (Some(23), "default_route.class"),
    ];
    for w in want {
        assert!(got.contains(&w), "missing {w:?} in {errs:#?}");
    }
    assert_eq!(got.len(), want.len(), "{errs:#?}");
    let prio = errs
        .iter()
        .find(|e| e.path == "routes[0].priority")
        .unwrap();
    assert!(prio
        .message
        .contains("critical, high, normal, low, background"));
}

#[test]
fn unknown_keys_are_reported_with_their_lines() {
    let src = "[listener]\naddr = \"0.0.0.0:8080\"\nworkerz = 2\n\n[[routes]]\nname = \"a\"\npath = \"/x\"\n\n[bogus]\n";
    let errs = errors(src, &no_env);
    assert_eq!(
        placed(&errs),
        [
            (Some(3), "listener.workerz"),
            (Some(7), "routes[0].path"),
            (Some(9), "bogus")
        ],
        "{errs:?}"
    );
    assert!(
        errs[0].message.contains("unknown field `workerz`"),
        "{}",
        errs[0].message
    );
}

#[test]
fn wrong_types_are_reported_and_validation_continues() {
    let src = "[listener]\nmax_connections = \"many\"\n\n[classes.db]\nmax_concurrent = -1\nqueue_size = 0\n\n[health]\npath = \"nope\"\n";
    let errs = errors(src, &no_env);
    assert_eq!(
        placed(&errs),
        [
            (Some(2), "listener.max_connections"),
            (Some(5), "classes.db.max_concurrent"),
            (Some(9), "health.path"),
        ],
        "{errs:?}"
    );
}

#[test]
fn syntax_errors_carry_lines() {
    let errs = errors("[listener]\naddr = \n", &no_env);
    assert!(!errs.is_empty());
    assert_eq!(errs[0].line, Some(2), "{errs:?}");
}

#[test]
fn addresses_are_checked() {
    let src = "[listener]\naddr = \"localhost:80\"\n[observability]\naddr = \"1.2.3.4\"\n[upstream]\naddr = \"app:0\"\n";
    let errs = errors(src, &no_env);
    assert_eq!(
        placed(&errs),
        [
            (Some(2), "listener.addr"),
            (Some(4), "observability.addr"),
            (Some(6), "upstream.addr")
        ]
    );
    for ok in ["app:8000", "[::1]:8000", "10.0.0.1:1"] {
        let c = load(&format!("[upstream]\naddr = {ok:?}\n")).unwrap();
        assert_eq!(c.upstream.addr, ok);
    }
}

const SEED_CLASSES: &str = "[classes.db]\n[classes.http]\n[classes.cache]\n[[routes]]\nname = \"own\"\ntimeout_ms = 3000\n";

#[test]
fn every_env_override_is_applied() {
    let env = env_of(&[
        ("CONCURRENCY_ENABLED", "false"),
        ("MAX_CONCURRENT_DB_OPS", "40"),
        ("MAX_CONCURRENT_HTTP_OPS", "30"),
        ("MAX_CONCURRENT_CACHE_OPS", "20"),
        ("WORKER_POOL_SIZE_DB", "4"),
        ("WORKER_POOL_SIZE_HTTP", "3"),
        ("WORKER_POOL_SIZE_CACHE", "2"),
        ("BACKGROUND_WORKER_COUNT", "7"),
        ("BACKGROUND_QUEUE_SIZE", "77"),
        ("CIRCUIT_BREAKER_THRESHOLD", "9"),
        ("REQUEST_TIMEOUT_SECONDS", "12"),
        ("HEALTH_CHECK_INTERVAL", "1m30s"),
    ]);
    let c = Config::from_toml_str(SEED_CLASSES, "config.toml", &env).unwrap();
    assert!(!c.concurrency.enabled);
    let limits: Vec<_> = c
        .classes
        .iter()
        .map(|k| (k.name.as_str(), k.max_concurrent, k.min_concurrent))
        .collect();
    assert_eq!(limits, [("cache", 20, 2), ("db", 40, 4), ("http", 30, 3)]);
    assert_eq!((c.background.workers, c.background.queue_size), (7, 77));
    assert_eq!(c.circuit_breaker.failure_threshold, 9);
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(12));
    // The default route inherits; a route with its own timeout keeps it.
    assert_eq!(c.routes[1].timeout, Duration::from_secs(12));
    assert_eq!(c.routes[0].timeout, Duration::from_millis(3000));
    assert_eq!(c.health.interval, Duration::from_secs(90));

    let c = Config::from_toml_str(
        "",
        "config.toml",
        &env_of(&[("HEALTH_CHECK_INTERVAL", "30")]),
    )
    .unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(30));
}

#[test]
fn bad_env_values_name_the_variable() {
    let env = env_of(&[
        ("MAX_CONCURRENT_DB_OPS", "lots"),
        ("CONCURRENCY_ENABLED", "yes"),
        ("HEALTH_CHECK_INTERVAL", "soon"),
    ]);
    let errs = errors("", &env);
    let origins: Vec<_> = errs.iter().map(|e| e.origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "env CONCURRENCY_ENABLED",
            "env MAX_CONCURRENT_DB_OPS",
            "env HEALTH_CHECK_INTERVAL"
        ],
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| e.line.is_none()));
    assert_eq!(errs[1].path, "classes.db.max_concurrent");
    assert!(ConfigErrors(errs)
        .to_string()
        .contains("env MAX_CONCURRENT_DB_OPS: classes.db.max_concurrent: invalid value \"lots\""));
}

#[test]
fn env_values_are_validated_like_file_values() {
    let src = "[classes.db]\nmax_concurrent = 100\nmin_concurrent = 10\n";
    let errs = errors(src, &env_of(&[("MAX_CONCURRENT_DB_OPS", "5")]));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].origin, "env MAX_CONCURRENT_DB_OPS");
    assert!(errs[0]
        .message
        .contains("min_concurrent (10) must not exceed max_concurrent (5)"));

    let errs = errors(
        "",
        &env_of(&[
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("CIRCUIT_BREAKER_THRESHOLD", "0"),
        ]),
    );
    let origins: Vec<_> = errs.iter().map(|e| e.origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "env REQUEST_TIMEOUT_SECONDS",
            "env CIRCUIT_BREAKER_THRESHOLD"
        ],
        "{errs:?}"
    );
}

#[test]
fn env_override_of_an_undefined_class_is_an_error() {
    let src = "[classes.db]\n";
    let errs = errors(
        src,
        &env_of(&[
            ("MAX_CONCURRENT_CACHE_OPS", "10"),
            ("WORKER_POOL_SIZE_DB", "3"),
        ]),
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].origin, "env MAX_CONCURRENT_CACHE_OPS");
    assert!(errs[0].message.contains("\"cache\""));
}

#[test]
fn empty_env_value_counts_as_unset() {
    let c = Config::from_toml_str("", "config.toml", &env_of(&[("MAX_CONCURRENT_DB_OPS", "")]))
        .unwrap();
    assert_eq!(c.classes[1].max_concurrent, 100);
}

#[test]
fn admin_token_from_env_and_from_file() {
    let c = Config::from_toml_str(
        "[admin]\ntoken_env = \"TOK\"\n",
        "config.toml",
        &env_of(&[("TOK", " abc \n")]),
    )
    .unwrap();
    assert_eq!(c.admin.token.as_ref().map(Secret::expose), Some("abc"));

    let dir = std::env::temp_dir().join(format!("sluice-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let src = format!("[admin]\ntoken_file = {:?}\n", file.display().to_string());
    let c = load(&src).unwrap();
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some("from-file")
    );

    std::fs::write(&file, "  \n").unwrap();
    assert_eq!(
        placed(&errors(&src, &no_env)),
        [(Some(2), "admin.token_file")]
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        placed(&errors(&src, &no_env)),
        [(Some(2), "admin.token_file")]
    );
    let _ = std::fs::remove_dir(&dir);

    let both = "[admin]\ntoken_env = \"TOK\"\ntoken_file = \"/x\"\n";
    assert_eq!(
        placed(&errors(both, &no_env)),
        [(Some(3), "admin.token_file")]
    );
}

#[test]
fn secrets_do_not_leak_through_debug() {
    let c = Config::from_toml_str(
        "[admin]\ntoken_env = \"TOK\"\n",
        "config.toml",
        &env_of(&[("TOK", "hunter2")]),
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"));
    assert!(debug.contains("<redacted>"));
    let secret = c.admin.token.unwrap();
    assert_eq!(format!("{secret}"), "<redacted>");
    assert_eq!(format!("{secret:?}"), "<redacted>");
}

#[test]
fn load_reports_an_unreadable_file() {
    let missing = std::path::Path::new("/nonexistent/sluice.toml");
    let errs = Config::load(missing, &no_env).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].origin, "/nonexistent/sluice.toml");
}

#[test]
fn load_reads_the_root_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let c = Config::load(&path, &env_of(&[("SLUICE_ADMIN_TOKEN", "t")])).unwrap();
    assert_eq!(c.routes.len(), root().routes.len());
}

#[test]
fn admission_keys_parse_and_bad_ones_are_reported() {
    let c = load(
        "[classes.db]\nfair_key = \"header:authorization\"\ncodel_target_ms = 20\n\n[[routes]]\nname = \"r\"\nrate_limit_rps = 2.5\nrate_limit_key = \"client_ip\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let db = &c.classes[0];
    assert_eq!(
        db.fair_key,
        KeySource::Header(http::HeaderName::from_static("authorization"))
    );
    assert_eq!(db.codel_target, Duration::from_millis(20));
    assert_eq!(db.codel_interval, Duration::from_millis(100));
    let rl = c.routes[0].rate_limit.clone().unwrap();
    assert_eq!(
        (rl.per_second, rl.burst, rl.key),
        (2.5, 3, KeySource::ClientIp)
    );
    assert!(
        c.routes[1].rate_limit.is_none(),
        "the default route has none"
    );

    let errs = errors(
        "[classes.db]\nfair_key = \"cookie\"\n\n[[routes]]\nname = \"r\"\nrate_limit_rps = -1.0\n\n[[routes]]\nname = \"s\"\nrate_limit_burst = 3\n",
        &no_env,
    );
    assert_eq!(
        placed(&errs),
        [
            (Some(2), "classes.db.fair_key"),
            (Some(6), "routes[0].rate_limit_rps"),
            (Some(10), "routes[1].rate_limit_burst"),
        ]
    );
}
