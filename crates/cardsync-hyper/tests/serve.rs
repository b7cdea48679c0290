//! The accept loop's limits over real sockets on loopback: it does not spin when the process
//! runs out of file descriptors, one peer cannot hold more than its share of connections, and
//! a silent new connection is closed sooner than a slow request head. Every server started
//! here is stopped, and every wait is bounded.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use cardsync_hyper::server::{ServeLimits, serve};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Answers every request `200 ok`.
async fn ok(
    _request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Starts [`serve`] on a free loopback port with `limits`; the sender stops it. Its listen
/// queue holds 1024 connections (tokio's default, 128, is fewer than some tests keep
/// waiting).
async fn start(limits: ServeLimits) -> (SocketAddr, watch::Sender<bool>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, limits, stopped, ok));
    (addr, stop)
}

/// A request on a new connection from `from` (any loopback address), and the start of its
/// answer, within 10 s.
async fn request_from(from: &str, addr: SocketAddr) -> String {
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| "no answer within 10 s".to_owned())
}

/// Whether the server closed `stream` (end of stream or reset) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn one_peer_past_its_cap_is_closed_at_once_and_another_is_answered() {
    let limits = ServeLimits::default()
        .with_max_connections(16)
        .with_max_connections_per_peer(4)
        .with_first_byte_timeout(Duration::from_secs(30))
        .with_header_read_timeout(Duration::from_secs(30));
    let (addr, stop) = start(limits).await;

    // One peer opens twenty silent connections, more than the server's cap of 16: four are
    // kept, sixteen are closed at once (without the cap per peer it would hold all 16 places
    // and the other peer below would wait for its first-byte limit, 30 s).
    let mut greedy = Vec::new();
    for _ in 0..20 {
        greedy.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut closed = 0;
    let mut kept = Vec::new();
    for mut stream in greedy {
        if closed_within(&mut stream, Duration::from_millis(500)).await {
            closed += 1;
        } else {
            kept.push(stream);
        }
    }
    assert_eq!(
        (closed, kept.len()),
        (16, 4),
        "connections closed and kept of one peer with a cap of 4"
    );

    // Another peer (another loopback address) is answered while the first holds its four.
    let answer = request_from("127.0.0.2", addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // Once one of its connections ends, the first peer may open another.
    drop(kept.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request_from("127.0.0.1", addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        // Closed at once while the server had not yet seen the dropped connection end.
        assert!(tokio::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_silent_connection_is_closed_before_the_head_limit_a_started_head_is_not() {
    let limits = ServeLimits::default()
        .with_first_byte_timeout(Duration::from_millis(300))
        .with_header_read_timeout(Duration::from_secs(30));
    let (addr, stop) = start(limits).await;

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a connection that sent nothing was kept open past its first-byte limit"
    );

    // A head whose first bytes came in time has the head's own limit.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    slow.write_all(b"TP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let _ = stop.send(true);
}

/// The environment variable that makes [`serve_child`] run: it is the child process of
/// [`running_out_of_descriptors_does_not_make_the_accept_loop_spin`].
#[cfg(target_os = "linux")]
const CHILD: &str = "CARDSYNC_SERVE_CHILD";

/// The server of the descriptor test, in a process of its own (this test binary started again
/// by that test, under a low `ulimit -n`): prints `port N`, then serves until its standard
/// input closes. `hog` on its standard input opens files until none can be opened (`hogged
/// N`); `free` closes them (`freed`). Logs go to standard error.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "the child process of running_out_of_descriptors_does_not_make_the_accept_loop_spin"]
fn serve_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, stop) = runtime.block_on(start(
        // Idle connections stay for the whole test, and all come from one peer.
        ServeLimits::default()
            .with_first_byte_timeout(Duration::from_secs(120))
            .with_header_read_timeout(Duration::from_secs(120))
            .with_max_connections_per_peer(100_000),
    ));
    println!("port {}", addr.port());
    let mut hogged: Vec<std::fs::File> = Vec::new();
    for line in std::io::stdin().lines() {
        match line.unwrap().as_str() {
            "hog" => {
                while let Ok(file) = std::fs::File::open("/dev/null") {
                    hogged.push(file);
                }
                println!("hogged {}", hogged.len());
            }
            "free" => {
                hogged.clear();
                println!("freed");
            }
            _ => {}
        }
    }
    let _ = stop.send(true);
}

/// The user and system CPU time a process has used, from `/proc/PID/stat`.
#[cfg(target_os = "linux")]
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: state is the first;
    // utime and stime are fields 14 and 15 of the whole line, so 12 and 13 here.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A request on a new connection and the start of its answer, within 10 s (blocking).
#[cfg(target_os = "linux")]
fn blocking_request(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return "cannot connect".to_owned();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Runs the exhaustion scenario in a child process with `ulimit -n 64` (the limit applies to
/// the whole process, so not in this one, where other tests run), and measures the child's
/// CPU time while 150 idle connections wait and while every descriptor is taken.
#[cfg(target_os = "linux")]
#[test]
fn running_out_of_descriptors_does_not_make_the_accept_loop_spin() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    let log = std::env::temp_dir().join(format!("cardsync-serve-child-{}.log", std::process::id()));
    /// Kills the child if the test fails before it ends it.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            if self.0.try_wait().is_ok_and(|done| done.is_none()) {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "serve_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let pid = child.0.id();
    let mut commands = child.0.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // What follows `prefix` on the next line of the child's that has it, within 30 s (the test
    // harness may have written its own words before it on the line).
    let expect = |prefix: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].to_owned();
                    }
                }
                Err(_) => panic!("the child never said {prefix:?}"),
            }
        }
    };
    let port: u16 = expect("port ").trim().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The child's open descriptors, and a wait (at most 10 s) until they are back to these.
    let open = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let at_rest = open();
    let settle = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open() > at_rest {
            assert!(
                std::time::Instant::now() < deadline,
                "the child kept {} descriptors open, {at_rest} at rest",
                open()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let spin_bound = Duration::from_millis(500);
    let window = Duration::from_secs(2);

    // 150 idle connections: more than the child has descriptors for.
    let idle: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(pid);
    std::thread::sleep(window);
    let used = cpu_time(pid).saturating_sub(before);
    assert!(
        used < spin_bound,
        "with 150 idle connections the server used {used:?} of CPU in {window:?}"
    );
    drop(idle);
    let answer = blocking_request(addr);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "once the idle connections closed: {answer:?}"
    );

    // Every descriptor taken by the rest of the process (once the server closed all it had
    // open): accept itself fails.
    settle();
    writeln!(commands, "hog").unwrap();
    let hogged: usize = expect("hogged ").trim().parse().unwrap();
    assert!(hogged > 0);
    let waiting: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(pid);
    std::thread::sleep(window);
    let used = cpu_time(pid).saturating_sub(before);
    assert!(
        used < spin_bound,
        "with no descriptor left the server used {used:?} of CPU in {window:?}"
    );
    writeln!(commands, "free").unwrap();
    expect("freed");
    drop(waiting);
    let answer = blocking_request(addr);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "once descriptors were free again: {answer:?}"
    );

    drop(commands);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // One warning a spell of failures, not one a failure: each spell is logged when it starts
    // and when it ends (with how many failures it had), and the one while every descriptor was
    // taken had several. (Connections of the first part still closing as descriptors were
    // taken can split it in two.)
    let warnings = logged.matches("cannot accept connections").count();
    let failures: Vec<u64> = logged
        .lines()
        .filter(|l| l.contains("accepting connections again"))
        .filter_map(|l| l.split("failures=").nth(1)?.trim().parse().ok())
        .collect();
    assert!(warnings >= 1, "{logged}");
    assert_eq!(warnings, failures.len(), "{logged}");
    assert!(failures.iter().any(|&n| n >= 3), "{logged}");
}
