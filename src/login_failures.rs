//! librdkafka's reports that logging in to a broker failed, kept for a command's final
//! error. The request that needed the connection fails with only its effect
//! ("BrokerTransportFailure", "AllBrokersDown", a timeout); the reason (a wrong password,
//! an untrusted certificate) is in librdkafka's log lines, printed further up or not at
//! all. `strait run` names it in a flow's error through its clients' own contexts
//! (`strait_replicator`); this covers every client of every command, the one-shot ones
//! included, without a context of their own.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Per broker (`sasl_ssl://host:port/id`), its last login failure.
static FAILURES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// What librdkafka says when a login fails.
const LOGIN_FAILURES: [&str; 2] = ["SASL authentication error", "SSL handshake failed"];

/// A tracing layer that keeps librdkafka's login failures (its `FAIL` log lines and its
/// global errors, both of which name the broker).
pub struct LoginFailures;

impl<S: Subscriber> Layer<S> for LoginFailures {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let target = event.metadata().target();
        if !(target.starts_with("librdkafka") || target.starts_with("rdkafka")) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Some((broker, failure)) = login_failure(&message.0) {
            lock().insert(broker.to_string(), failure.to_string());
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// (broker, its failure from the broker's name on) if `message` reports a login failure:
/// "… sasl_ssl://127.0.0.1:29094/bootstrap: SASL authentication error: …".
fn login_failure(message: &str) -> Option<(&str, &str)> {
    let at = LOGIN_FAILURES.iter().find_map(|sign| message.find(sign))?;
    let before = message[..at].trim_end_matches(": ");
    let start = before.rfind(' ').map_or(0, |space| space + 1);
    Some((&message[start..before.len()], &message[start..]))
}

/// `error` with the login failures kept, if it shows only what a failed login causes and
/// does not say why already.
pub fn explain(error: String) -> String {
    let effects = [
        "BrokerTransportFailure",
        "AllBrokersDown",
        "TimedOut",
        "timed out",
    ];
    if error.contains("logging in to") || !effects.iter().any(|e| error.contains(e)) {
        return error;
    }
    let failures = lock();
    if failures.is_empty() {
        return error;
    }
    let why: Vec<&str> = failures.values().map(String::as_str).collect();
    format!("{error} (logging in failed: {})", why.join("; "))
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<String, String>> {
    FAILURES.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_failure_is_found_with_its_broker() {
        let line = "FAIL [thrd:sasl_ssl://127.0.0.1:29094/bootstrap]: \
                    sasl_ssl://127.0.0.1:29094/bootstrap: SASL authentication error: \
                    Authentication failed: Invalid username or password (after 300ms)";
        assert_eq!(
            login_failure(line),
            Some((
                "sasl_ssl://127.0.0.1:29094/bootstrap",
                "sasl_ssl://127.0.0.1:29094/bootstrap: SASL authentication error: \
                 Authentication failed: Invalid username or password (after 300ms)"
            ))
        );
        let global = "librdkafka: Global error: SSL (Local: SSL error): \
                      ssl://10.0.0.1:9093/1: SSL handshake failed: certificate verify failed";
        assert_eq!(
            login_failure(global).map(|(broker, _)| broker),
            Some("ssl://10.0.0.1:9093/1")
        );
        assert_eq!(
            login_failure("librdkafka: Global error: AllBrokersDown: 1/1 brokers are down"),
            None
        );
    }
}
