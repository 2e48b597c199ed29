//! Streams written on one line, as the CLI takes them:
//! `name=critical,rate=100,path=/api/v1/auth/login,method=POST,header=x-priority:critical`.
//!
//! Keys: `name` (default: the path), `rate` (required, requests per second), `path`
//! (default `/`), `method` (default `GET`), `header=NAME:VALUE` (repeatable). Values
//! cannot contain commas.

use std::str::FromStr;

use hyper::Method;

use super::Stream;

impl FromStr for Stream {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut name = None;
        let mut rate = None;
        let mut path = "/".to_owned();
        let mut method = Method::GET;
        let mut headers = Vec::new();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            let value = value.trim();
            match key.trim() {
                "name" => name = Some(value.to_owned()),
                "rate" => {
                    let r: f64 = value
                        .parse()
                        .map_err(|_| format!("rate {value:?}: not a number"))?;
                    if !r.is_finite() || r < 0.0 {
                        return Err(format!("rate {value:?}: must be ≥ 0"));
                    }
                    rate = Some(r);
                }
                "path" => {
                    if !value.starts_with('/') {
                        return Err(format!("path {value:?}: must start with /"));
                    }
                    path = value.to_owned();
                }
                "method" => {
                    method = Method::from_bytes(value.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("method {value:?}: invalid"))?;
                }
                "header" => {
                    let (n, v) = value
                        .split_once(':')
                        .ok_or_else(|| format!("header {value:?}: expected NAME:VALUE"))?;
                    headers.push((n.trim().to_owned(), v.trim().to_owned()));
                }
                other => {
                    return Err(format!(
                        "unknown key {other:?} (name, rate, path, method, header)"
                    ))
                }
            }
        }
        let rate_per_sec = rate.ok_or("rate=N is required")?;
        Ok(Stream {
            name: name.unwrap_or_else(|| path.clone()),
            rate_per_sec,
            method,
            path,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_spec() {
        let s: Stream =
            "name=critical,rate=100,path=/api/v1/auth/login,method=post,header=x-priority:critical,header=a:b"
                .parse()
                .unwrap();
        assert_eq!(s.name, "critical");
        assert_eq!(s.rate_per_sec, 100.0);
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.path, "/api/v1/auth/login");
        assert_eq!(
            s.headers,
            vec![
                ("x-priority".into(), "critical".into()),
                ("a".into(), "b".into())
            ]
        );
    }

    #[test]
    fn defaults_and_errors() {
        let s: Stream = "rate=2.5".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.path.as_str(), s.method),
            ("/", "/", Method::GET)
        );
        assert!("name=x".parse::<Stream>().unwrap_err().contains("rate"));
        assert!("rate=-1".parse::<Stream>().is_err());
        assert!("rate=1,path=x".parse::<Stream>().is_err());
        assert!("rate=1,colour=red".parse::<Stream>().is_err());
        assert!("rate=1,header=nocolon".parse::<Stream>().is_err());
    }
}
