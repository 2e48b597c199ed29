//! Classification: request head -> the first route rule that matches it.
//!
//! Pure and allocation-free per request. Every rule's path test (prefix or regex) is
//! compiled into one `RegexSet`, so a request costs one pass over its path however many
//! rules there are; methods and header values are then checked in rule order. The last
//! rule is the default route and matches everything, so classification never fails.

use crate::config::{PathMatch, RouteConfig};
use crate::priority::Priority;
use http::{HeaderMap, Method};
use regex::RegexSet;
use std::time::Duration;

/// The decision classification hands to admission and forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// Index into the route table (and the metrics' route label).
    pub route: usize,
    /// Index into the class table.
    pub class: usize,
    pub priority: Priority,
    /// Deadline for the upstream's response head.
    pub timeout: Duration,
    /// Never queued or shed (probes, scrapes).
    pub bypass: bool,
}

/// Ordered route rules, first match wins.
#[derive(Debug)]
pub struct Classifier {
    routes: Vec<RouteConfig>,
    paths: RegexSet,
}

impl Classifier {
    /// Compiles the rules. Fails only if the combined path set exceeds the regex size limit.
    pub fn new(routes: Vec<RouteConfig>) -> Result<Classifier, regex::Error> {
        let patterns = routes.iter().map(|r| match &r.path {
            PathMatch::Any => String::new(),
            PathMatch::Prefix(p) => format!("^{}", regex::escape(p)),
            PathMatch::Regex(re) => re.as_str().to_string(),
        });
        let paths = RegexSet::new(patterns)?;
        Ok(Classifier { routes, paths })
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Classifies one request head. Falls back to the last rule (the default route).
    pub fn classify(&self, method: &Method, path: &str, headers: &HeaderMap) -> Class {
        let matched = self.paths.matches(path);
        let index = matched
            .iter()
            .find(|&i| {
                let r = &self.routes[i];
                (r.methods.is_empty() || r.methods.contains(method))
                    && r.headers
                        .iter()
                        .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
            })
            .unwrap_or(self.routes.len().saturating_sub(1));
        match self.routes.get(index) {
            Some(r) => Class {
                route: index,
                class: r.class,
                priority: r.priority,
                timeout: r.timeout,
                bypass: r.bypass,
            },
            None => Class {
                route: 0,
                class: 0,
                priority: Priority::Normal,
                timeout: Duration::from_secs(14),
                bypass: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn route(name: &str, methods: &[Method], path: PathMatch, prio: Priority) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            methods: methods.to_vec(),
            path,
            headers: vec![],
            class: 0,
            priority: prio,
            timeout: Duration::from_secs(1),
            bypass: false,
            rate_limit: None,
            fallback: None,
        }
    }

    fn classifier() -> Classifier {
        let mut by_header = route("by-header", &[], PathMatch::Any, Priority::Critical);
        by_header.headers = vec![(
            HeaderName::from_static("x-priority"),
            HeaderValue::from_static("critical"),
        )];
        let regex =
            regex::Regex::new("^/api/v1/(exam-attempts|user-answers)").map_err(|e| e.to_string());
        Classifier::new(vec![
            route(
                "submit",
                &[Method::POST, Method::PUT],
                PathMatch::Regex(regex.unwrap_or_else(|e| panic!("{e}"))),
                Priority::Critical,
            ),
            route(
                "reads",
                &[],
                PathMatch::Prefix("/api/v1/exam-attempts".into()),
                Priority::High,
            ),
            by_header,
            route(
                "search",
                &[],
                PathMatch::Prefix("/api/v1/words/search".into()),
                Priority::Low,
            ),
            route("default", &[], PathMatch::Any, Priority::Normal),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn name(c: &Classifier, m: Method, path: &str, h: &HeaderMap) -> String {
        c.routes()[c.classify(&m, path, h).route].name.clone()
    }

    #[test]
    fn first_matching_rule_wins_with_methods_and_paths() {
        let c = classifier();
        let h = HeaderMap::new();
        assert_eq!(
            name(&c, Method::POST, "/api/v1/exam-attempts/7", &h),
            "submit"
        );
        assert_eq!(
            name(&c, Method::GET, "/api/v1/exam-attempts/7", &h),
            "reads"
        );
        assert_eq!(
            name(&c, Method::GET, "/api/v1/words/search?q=a", &h),
            "search"
        );
        assert_eq!(name(&c, Method::GET, "/elsewhere", &h), "default");
        // A prefix is literal, not a regex.
        assert_eq!(name(&c, Method::GET, "/api/v1/words/searchX", &h), "search");
        assert_eq!(
            name(&c, Method::GET, "/xapi/v1/words/search", &h),
            "default"
        );
    }

    #[test]
    fn header_rules_match_exact_values() {
        let c = classifier();
        let mut h = HeaderMap::new();
        h.insert("x-priority", HeaderValue::from_static("low"));
        assert_eq!(name(&c, Method::GET, "/api/v1/words/search", &h), "search");
        h.append("x-priority", HeaderValue::from_static("critical"));
        let class = c.classify(&Method::GET, "/api/v1/words/search", &h);
        assert_eq!(c.routes()[class.route].name, "by-header");
        assert_eq!(class.priority, Priority::Critical);
    }
}
