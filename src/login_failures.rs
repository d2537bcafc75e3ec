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
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Per broker (`sasl_ssl://host:port/id`), its last login failure and when it came.
static FAILURES: Mutex<BTreeMap<String, (Instant, String)>> = Mutex::new(BTreeMap::new());

/// How long a failure explains later errors. The request that needed the connection
/// fails within its own timeout (30 s at most) of the failure; a long-running command
/// must not blame an error on a login that failed long ago and has worked since (no
/// event says that a login worked).
const RECENT: Duration = Duration::from_secs(120);

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
            lock().insert(broker.to_string(), (Instant::now(), failure.to_string()));
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
    let why: Vec<&str> = failures
        .values()
        .filter(|(when, _)| when.elapsed() < RECENT)
        .map(|(_, failure)| failure.as_str())
        .collect();
    if why.is_empty() {
        return error;
    }
    format!("{error} (logging in failed: {})", why.join("; "))
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<String, (Instant, String)>> {
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

    #[test]
    fn only_an_error_that_shows_just_the_effect_gets_a_recent_login_failure() {
        let transport = "reading t: Meta data fetch error: AllBrokersDown (Local: …)";
        assert_eq!(explain(transport.to_string()), transport);
        if let Some(long_ago) = Instant::now().checked_sub(RECENT * 2) {
            lock().insert(
                "ssl://old:9093/1".into(),
                (long_ago, "old: SSL handshake failed".into()),
            );
            assert_eq!(explain(transport.to_string()), transport);
        }
        lock().insert(
            "sasl_ssl://b:9094/1".into(),
            (
                Instant::now(),
                "sasl_ssl://b:9094/1: SASL authentication error: no".into(),
            ),
        );
        assert_eq!(
            explain(transport.to_string()),
            format!("{transport} (logging in failed: sasl_ssl://b:9094/1: SASL authentication error: no)")
        );
        for unrelated in [
            "reading t: Topic authorization failed",
            "listing topics (logging in to 'x' failed: …): BrokerTransportFailure",
        ] {
            assert_eq!(explain(unrelated.to_string()), unrelated);
        }
    }
}
