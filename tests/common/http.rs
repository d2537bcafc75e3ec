//! Strait's HTTP endpoints as the tests read them: `/status` as JSON, `/metrics` values.

use super::*;

/// `strait`'s `/status` as JSON, or `Null` while it does not answer.
pub fn status_json(strait: &Strait) -> serde_json::Value {
    let raw = http_get(strait.port, "/status").unwrap_or_default();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Minimal HTTP/1.0 GET, enough for /metrics and /healthz.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of a metric line that starts with `prefix` (name plus labels).
pub fn metric_value(metrics: &str, name: &str, label_fragment: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label_fragment))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
