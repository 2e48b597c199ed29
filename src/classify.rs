//! Classification: request head -> the first route rule that matches it.
//!
//! Pure. Every rule's path test (prefix or regex) is compiled into one `RegexSet`, so a
//! request costs at most one pass over its path however many rules there are, and none
//! when the rules it reaches test no path; methods and header values are checked in rule
//! order. The last rule is the default route and matches everything, so classification
//! never fails.

use crate::config::{PathMatch, RouteConfig};
use crate::priority::Priority;
use http::header::GetAll;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
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
    /// The path tests of the rules that have one.
    paths: RegexSet,
    /// Per rule: its pattern's index in `paths`, or `None` when it tests no path.
    path_of: Vec<Option<usize>>,
}

impl Classifier {
    /// Compiles the rules. Fails only if the combined path set exceeds the regex size limit.
    pub fn new(routes: Vec<RouteConfig>) -> Result<Classifier, regex::Error> {
        let mut patterns = Vec::new();
        let path_of = routes
            .iter()
            .map(|r| {
                let pattern = match &r.path {
                    PathMatch::Any => return None,
                    PathMatch::Prefix(p) => format!("^{}", regex::escape(p)),
                    PathMatch::Regex(re) => re.as_str().to_string(),
                };
                patterns.push(pattern);
                Some(patterns.len() - 1)
            })
            .collect();
        let paths = RegexSet::new(patterns)?;
        Ok(Classifier {
            routes,
            paths,
            path_of,
        })
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Classifies one request head. Falls back to the last rule (the default route).
    pub fn classify(&self, method: &Method, path: &str, headers: &HeaderMap) -> Class {
        // The path set runs once, and only if a rule reached in order tests the path.
        let mut matched = None;
        // Rules often test the same header (`x-priority`): look each name up once in a row.
        let mut last = None;
        let index = self
            .routes
            .iter()
            .zip(&self.path_of)
            .position(|(r, path_of)| {
                (r.methods.is_empty() || r.methods.contains(method))
                    && r.headers
                        .iter()
                        .all(|(name, value)| has_value(headers, name, value, &mut last))
                    && match *path_of {
                        None => true,
                        Some(p) => matched
                            .get_or_insert_with(|| self.paths.matches(path))
                            .matched(p),
                    }
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

/// True when one of `headers`' values for `name` is `value`; `last` keeps the previous
/// lookup so that consecutive tests of one name hash it once.
fn has_value<'a>(
    headers: &'a HeaderMap,
    name: &'a HeaderName,
    value: &HeaderValue,
    last: &mut Option<(&'a HeaderName, GetAll<'a, HeaderValue>)>,
) -> bool {
    if !matches!(last, Some((n, _)) if *n == name) {
        *last = Some((name, headers.get_all(name)));
    }
    last.as_ref()
        .is_some_and(|(_, all)| all.iter().any(|v| v == value))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rules_without_path_tests_need_no_path_set() {
        let mut critical = route("critical", &[], PathMatch::Any, Priority::Critical);
        critical.headers = vec![(
            HeaderName::from_static("x-priority"),
            HeaderValue::from_static("critical"),
        )];
        let mut high = route("high", &[], PathMatch::Any, Priority::High);
        high.headers = vec![(
            HeaderName::from_static("x-priority"),
            HeaderValue::from_static("high"),
        )];
        let c = Classifier::new(vec![
            critical,
            high,
            route("default", &[], PathMatch::Any, Priority::Normal),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.paths.is_empty());
        let mut h = HeaderMap::new();
        assert_eq!(name(&c, Method::GET, "/a", &h), "default");
        h.insert("x-priority", HeaderValue::from_static("critical"));
        assert_eq!(name(&c, Method::GET, "/a", &h), "critical");
        h.insert("x-priority", HeaderValue::from_static("high"));
        assert_eq!(name(&c, Method::GET, "/a", &h), "high");
    }
}
