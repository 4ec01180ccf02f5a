use std::num::NonZeroU32;
use std::time::Instant;

use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::config::{Api, Rate, TokenSource};

/// A peer that answers the first PATCH with a 429 without `Retry-After` and every other
/// with 204, and reports each request's path and arrival.
async fn peer() -> (String, mpsc::UnboundedReceiver<(String, Instant)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let first = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (tx, first) = (tx.clone(), first.clone());
            tokio::spawn(async move {
                let mut conn = BufReader::new(socket);
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        if conn.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let _ = tx.send((path, Instant::now()));
                    let answer: &[u8] = if first.swap(false, Ordering::Relaxed) {
                        b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    };
                    if conn.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), rx)
}

fn sender(base_url: String, initial_backoff: Duration) -> Sender {
    let api = Api {
        base_url,
        token: TokenSource::Env("UNUSED".into()),
        timeout: Duration::from_secs(5),
    };
    let client = Client::new(&api, &SecretString::from("t")).expect("client");
    let rate = Rate {
        requests_per_second: 1000.0,
        burst: NonZeroU32::new(10).expect("10"),
        max_in_flight: 2,
    };
    let retry = Retry {
        max_attempts: 3,
        initial_backoff,
        max_backoff: Duration::from_secs(5),
    };
    Sender::new(client, Throttle::new(&rate), retry, 2)
}

fn patch() -> Patch {
    Patch {
        changes: Vec::new(),
        body: serde_json::Map::new(),
        row: [0; 16],
    }
}

/// CONTRACT: a 429 pauses the whole sender. Without `Retry-After` the pause is the
/// record's backoff before jitter: another record's request waits it out too.
#[tokio::test]
async fn a_429_without_retry_after_pauses_every_record_for_the_backoff() {
    let (url, mut arrivals) = peer().await;
    let backoff = Duration::from_millis(400);
    let sender = Arc::new(sender(url, backoff));
    let first = tokio::spawn({
        let sender = sender.clone();
        async move { sender.deliver("A", &patch()).await }
    });
    let (path, throttled_at) = arrivals.recv().await.expect("A arrives");
    assert_eq!(path, "/accounts/A");
    // Give the 429 time to come back before B asks to start.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sender.deliver("B", &patch()).await, Delivery::Confirmed);
    assert_eq!(first.await.expect("A's task"), Delivery::Confirmed);

    let mut later = Vec::new();
    while let Ok(arrival) = arrivals.try_recv() {
        later.push(arrival);
    }
    assert_eq!(later.len(), 2, "{later:?}");
    for (path, at) in later {
        let waited = at.duration_since(throttled_at);
        // The 429 is answered after its arrival: the pause ends at least `backoff` after.
        assert!(waited >= backoff, "{path} started {waited:?} after the 429");
        assert!(
            waited < backoff + Duration::from_millis(300),
            "{path} waited {waited:?}: more than the backoff, no jitter expected"
        );
    }
    assert_eq!(sender.stats.throttled.load(Ordering::Relaxed), 1);
}

/// Log lines written while `f` runs, without colours.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = lines.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One way of stopping a run.
type Stopping = fn(&Sender);

/// A signalled stop is the operator's own (`systemctl stop`): a warning, so that
/// `journalctl -p err` lists only the stops that need a look.
#[tokio::test]
async fn a_signalled_stop_is_a_warning_and_other_stops_are_errors() {
    let cases: [(&str, Stopping); 2] = [
        ("WARN", |s| s.interrupt(Duration::from_secs(1))),
        ("ERROR", |s| {
            s.stop("the API refused the token".into(), true)
        }),
    ];
    for (level, stop) in cases {
        let s = sender("http://127.0.0.1:9".into(), Duration::from_millis(10));
        let out = logged(|| stop(&s));
        let line = out
            .lines()
            .find(|l| l.contains("Stopping the run."))
            .unwrap_or_else(|| panic!("no stop logged: {out}"));
        assert!(line.contains(level), "expected {level}: {line}");
        assert!(s.cancel.is_cancelled());
    }
}
