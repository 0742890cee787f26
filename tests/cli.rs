//! Real-binary tests: `ftserver` and `ftclient` as a user runs them, in temporary folders.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;

use crate::util::{RealServer, WAIT, bin, fake_server, ftclient, next_request, pattern, put};

/// A work folder laid out like the repository: server_downloads/ with a few files.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    put(&dir.path().join("server_downloads"), "file1.txt", b"hello from file1\n");
    put(&dir.path().join("server_downloads"), "docs/a b.txt", b"spaced");
    put(&dir.path().join("server_downloads"), "big.bin", &pattern(3 << 20));
    dir
}

#[test]
fn quick_start_list_and_get_with_default_folders() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let (code, out, err) = ftclient(work.path(), server.port, &["list"], b"");
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    let names: Vec<&str> = out.lines().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(names, ["big.bin", "docs/a b.txt", "file1.txt"], "{out}");
    assert!(out.lines().next().unwrap().trim_start().starts_with("3 MiB  "), "{out}");

    let (code, out, err) = ftclient(work.path(), server.port, &["get", "file1.txt", "docs/a b.txt", "big.bin"], b"");
    assert_eq!((code, out.len()), (0, 0), "{err}");
    let saved = work.path().join("client_downloads");
    assert_eq!(fs::read(saved.join("file1.txt")).unwrap(), b"hello from file1\n");
    assert_eq!(fs::read(saved.join("docs/a b.txt")).unwrap(), b"spaced");
    assert!(fs::read(saved.join("big.bin")).unwrap() == pattern(3 << 20));
    // The server mirrored what it cached into server_cache/.
    assert_eq!(fs::read_dir(work.path().join("server_cache")).unwrap().count(), 3);
}

#[test]
fn exit_codes_and_messages_name_the_file_and_the_cause() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let run = |args: &[&str]| ftclient(work.path(), server.port, args, b"");

    let (code, _, err) = run(&["get", "file1.txt", "missing.txt"]);
    assert_eq!(code, 3, "not found");
    assert!(err.contains("missing.txt") && err.contains("no such file"), "{err}");
    assert!(work.path().join("client_downloads/file1.txt").exists(), "the good file is still saved");
    assert!(!work.path().join("client_downloads/missing.txt").exists());

    let (code, _, err) = run(&["get", "../etc/passwd"]);
    assert_eq!(code, 2, "a bad name is a usage error");
    assert!(err.contains("../etc/passwd") && err.contains("bad name"), "{err}");

    let (code, _, err) = run(&["get"]);
    assert_eq!(code, 2, "usage error: {err}");
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, err) = run(&["get", "-o", "-", "a", "b"]);
    assert_eq!(code, 2);
    assert!(err.contains("one file"), "{err}");

    // A refusal other than not-found: a symlink leading out of the root is denied.
    std::os::unix::fs::symlink("/etc/hostname", work.path().join("server_downloads/escape")).unwrap();
    let (code, _, err) = run(&["get", "escape"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("escape") && err.contains("denied"), "{err}");

    let (code, out, err) = run(&["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8(out).unwrap().contains("cache_misses "));
}

#[test]
fn get_to_stdout_writes_exact_bytes_and_nothing_else() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let (code, out, err) = ftclient(work.path(), server.port, &["get", "big.bin", "-o", "-"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out == pattern(3 << 20));
    assert!(!work.path().join("client_downloads").exists());
}

#[test]
fn host_and_port_come_from_the_environment_and_a_refused_connection_exits_1() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let out = Command::new(bin("ftclient"))
        .arg("list")
        .env("FT_HOST", "127.0.0.1")
        .env("FT_PORT", server.port.to_string())
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("file1.txt"));

    // A port nobody listens on: take a free one and close it.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, _, err) = ftclient(work.path(), port, &["list"], b"");
    assert_eq!(code, 4, "connection");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn shell_runs_piped_commands_over_one_connection() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let script = b"help\nlist docs\nget docs/a b.txt\nget nope\nstats\nquit\nget file1.txt\n";
    let (code, out, err) = ftclient(work.path(), server.port, &["shell"], script);
    assert_eq!(code, 3, "a failed command makes the exit status non-zero: {err}");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("docs/a b.txt") && out.contains("connections_total 1"), "{out}");
    assert!(err.contains("nope") && err.contains("no such file"), "{err}");
    assert_eq!(fs::read(work.path().join("client_downloads/docs/a b.txt")).unwrap(), b"spaced");
    assert!(!work.path().join("client_downloads/file1.txt").exists(), "nothing runs after quit");

    let (code, _, err) = ftclient(work.path(), server.port, &["shell"], b"get file1.txt\n");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_client_leaves_no_final_file_when_the_server_dies_mid_body() {
    let (addr, fake) = fake_server(format!("OK 1000000 xxh3={}\npartial", ft::digest::Digest(0)).into_bytes());
    let port = addr.port();
    let work = tempfile::tempdir().unwrap();
    let (code, _, err) = ftclient(work.path(), port, &["get", "f.bin"], b"");
    fake.join().unwrap();
    assert_eq!(code, 4, "connection lost");
    assert!(err.contains("f.bin") && err.contains("connection lost after 7 of 1000000 bytes"), "{err}");
    assert!(!work.path().join("client_downloads/f.bin").exists());
}

#[test]
fn server_flags_are_checked() {
    let out = Command::new(bin("ftserver")).args(["--cache-size", "lots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64MiB"));
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(bin("ftserver"))
        .args(["--port", "0", "--root", "does-not-exist"])
        .current_dir(work.path())
        .env("XDG_CONFIG_HOME", work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
}

/// A one-connection fake server that reads one request, sends `reply` (a header and part of a
/// body), then holds the connection open until [`Stalling::finish`].
struct Stalling {
    port: u16,
    sent: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
    handle: thread::JoinHandle<()>,
}

impl Stalling {
    fn start(reply: Vec<u8>) -> Stalling {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent_tx, sent) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            next_request(&mut BufReader::new(&stream));
            (&stream).write_all(&reply).unwrap();
            sent_tx.send(()).unwrap();
            let _ = released.recv_timeout(WAIT);
        });
        Stalling { port, sent, release, handle }
    }

    /// Waits (bounded) until the reply has been sent.
    fn wait_sent(&self) {
        self.sent.recv_timeout(WAIT).unwrap();
    }

    /// Lets the connection go and waits for the server's thread.
    fn finish(self) {
        let _ = self.release.send(());
        self.handle.join().unwrap();
    }
}

/// Sends Ctrl-C's signal to a child process.
fn sigint(child: &std::process::Child) {
    // SAFETY: kill only sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

#[test]
fn ctrl_c_keeps_the_part_and_exits_130_and_resume_then_completes_it() {
    let work = workdir();
    let data = pattern(3 << 20);
    put(&work.path().join("server_downloads"), "big.bin", &data);
    // A fake server that sends a third of the file and then holds the connection open.
    let mut reply = format!("OK {} xxh3={}\n", data.len(), ft::digest::Digest::of(&data)).into_bytes();
    reply.extend_from_slice(&data[..data.len() / 3]);
    let stalling = Stalling::start(reply);
    let child = Command::new(bin("ftclient"))
        .args(["--port", &stalling.port.to_string(), "get", "big.bin"])
        .current_dir(work.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    stalling.wait_sent();
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    stalling.finish();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = work.path().join("client_downloads");
    assert!(!saved.join("big.bin").exists());
    if let Ok(part) = fs::read(saved.join("big.bin.part")) {
        assert!(data.starts_with(&part), "the .part holds a prefix of the file");
    }

    let server = RealServer::start(work.path(), &[]);
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "--resume", "big.bin"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(saved.join("big.bin")).unwrap() == data);
    assert!(!saved.join("big.bin.part").exists());
}

#[test]
fn sigterm_drains_and_exits_0_and_a_second_signal_exits_at_once() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &[]);
    let mut idle = crate::util::Wire::connect(format!("127.0.0.1:{}", server.port).parse().unwrap());
    idle.sync();
    server.signal(libc::SIGTERM);
    assert!(idle.closed(), "an idle connection is closed at shutdown");
    assert_eq!(server.wait_exit(), 0);

    put(&work.path().join("server_downloads"), "huge.bin", &pattern(64 << 20));
    let mut server = RealServer::start(work.path(), &["--grace", "5m", "--cache-size", "1MiB"]);
    let mut stalled = crate::util::Wire::connect(format!("127.0.0.1:{}", server.port).parse().unwrap());
    stalled.send("get huge.bin\n");
    assert!(stalled.line().starts_with("OK "));
    server.signal(libc::SIGTERM);
    server.wait_log("finishing transfers in flight");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), 128 + libc::SIGTERM);
}

#[test]
fn kill_9_mid_cache_write_leaves_only_complete_cache_files() {
    let work = workdir();
    let data = pattern(40 << 20);
    put(&work.path().join("server_downloads"), "big.bin", &data);
    // The server writes its cache file after the last byte is in its socket buffer, which can be
    // some megabytes before the client has read it all: kill it at a few points around there.
    for unread in [0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 6 << 20] {
        let _ = fs::remove_dir_all(work.path().join("server_cache"));
        let mut server = RealServer::start(work.path(), &["--cache-size", "64MiB"]);
        let mut w = crate::util::Wire::connect(format!("127.0.0.1:{}", server.port).parse().unwrap());
        w.send("get big.bin\n");
        assert!(w.line().starts_with("OK "));
        assert!(w.bytes(data.len() - unread) == data[..data.len() - unread]);
        server.signal(libc::SIGKILL);
        server.wait_exit();
        // Every entry file there is complete: right length, right digest. Only temporary files
        // may be partial.
        let cache = work.path().join("server_cache");
        let entries = fs::read_dir(&cache)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("ftc".as_ref()))
            .count();
        let mirror = ft::server::mirror::Mirror::open(&cache).unwrap();
        let stored = mirror.scan().unwrap();
        assert_eq!(stored.len(), entries, "a cache file was incomplete");
        for s in &stored {
            assert!(mirror.load(s).unwrap().to_vec().unwrap() == data);
        }
        let server = RealServer::start(work.path(), &[]);
        for entry in fs::read_dir(work.path().join("server_cache")).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            assert!(file.ends_with(".ftc"), "leftover {file} after restart");
        }
        let (code, out, err) = ftclient(work.path(), server.port, &["get", "big.bin", "-o", "-"], b"");
        assert_eq!(code, 0, "{err}");
        assert!(out == data);
    }
}

#[test]
fn running_out_of_file_descriptors_backs_off_without_spinning_or_crashing() {
    let work = workdir();
    let mut server = RealServer::start_limited(work.path(), &[], Some(32));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let hold: Vec<std::net::TcpStream> = (0..60).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Counted, not timed: each failed accept is logged with the pause before the next, which
    // must double from the first (5 ms) to its cap (1 s). A loop that retried without pausing
    // would log failures without end and never a growing pause. (An accept that succeeds in
    // between, when a descriptor comes free for a moment, starts the pauses over at 5 ms: only
    // the last run, and how many failures it all took, are checked.)
    let mut pauses = Vec::new();
    while pauses.last().is_none_or(|p: &String| p != "1s") {
        let line = server.wait_log("accept failed");
        let pause = line.rsplit("retrying in ").next().unwrap_or_default();
        pauses.push(pause.split_whitespace().next().unwrap_or_default().trim_matches('"').to_string());
        assert!(pauses.len() <= 40, "no backing off: {pauses:?}");
    }
    let last_run = &pauses[pauses.iter().rposition(|p| p == "5ms").unwrap_or(0)..];
    assert_eq!(last_run, ["5ms", "10ms", "20ms", "40ms", "80ms", "160ms", "320ms", "640ms", "1s"], "{pauses:?}");
    drop(hold);
    // The connections still queued when the peers closed are accepted, and hold a descriptor each
    // until their threads see the close; a request in that window may itself run out. Recovery
    // is what is tested: the server serves again within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (code, out, err) = loop {
        let (code, out, err) = ftclient(work.path(), server.port, &["list"], b"");
        if code == 0 || std::time::Instant::now() > deadline {
            break (code, out, err);
        }
        thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("file1.txt"));
}

#[test]
fn bench_prints_rates_and_latencies() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let args = ["bench", "file1.txt", "docs/a b.txt", "--conns", "2", "--duration", "200ms", "--pipeline", "2"];
    let (code, out, err) = ftclient(work.path(), server.port, &args, b"");
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    for want in ["connections 2, pipeline 2", "requests ", "/s)", "MB/s", "p50 ", "p99 ", "max ", "errors      0"] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let (code, out, _) = ftclient(work.path(), server.port, &["bench", "nope", "--duration", "100ms"], b"");
    assert_eq!(code, 1, "errors make the exit status non-zero");
    assert!(!String::from_utf8(out).unwrap().contains("errors      0"));
}

#[test]
fn bench_connects_by_host_name_as_get_does() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let port = server.port.to_string();
    let args = ["--host", "localhost", "--port", &port, "bench", "file1.txt", "--conns", "2", "--duration", "100ms"];
    let out = Command::new(bin("ftclient")).args(args).current_dir(work.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("errors      0"), "{stdout}");
}

#[test]
fn the_client_gives_up_on_a_server_that_never_answers() {
    // Accepts (the kernel's backlog does) but never reads or replies.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(bin("ftclient"))
        .args(["--port", &port.to_string(), "--timeout", "500ms", "get", "f.bin"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("f.bin") && err.contains("timed out"), "{err}");
    assert!(!work.path().join("client_downloads/f.bin").exists());
    drop(listener);
}

#[test]
fn integrity_and_local_failures_have_their_own_exit_codes() {
    // A server whose bytes do not match its digest: exit 5, nothing saved.
    let (addr, fake) = fake_server(format!("OK 5 xxh3={}\nhello", ft::digest::Digest::of(b"HELLO")).into_bytes());
    let port = addr.port();
    let work = workdir();
    let (code, _, err) = ftclient(work.path(), port, &["get", "f.txt"], b"");
    fake.join().unwrap();
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("f.txt") && err.contains("integrity"), "{err}");
    assert!(!work.path().join("client_downloads/f.txt").exists());

    // An output folder that cannot be made (a file is in the way): exit 6.
    let server = RealServer::start(work.path(), &[]);
    fs::write(work.path().join("blocked"), b"a file").unwrap();
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "file1.txt", "-o", "blocked/sub"], b"");
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("blocked/sub"), "{err}");
    let help = Command::new(bin("ftclient")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("5    integrity"));
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    for binary in ["ftclient", "ftserver"] {
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(bin(binary)).args(["completions", shell]).output().unwrap();
            assert!(out.status.success(), "{binary} completions {shell}");
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(binary) && script.contains("port"), "{binary} {shell}:\n{script}");
        }
        let out = Command::new(bin(binary)).args(["completions", "bash"]).output().unwrap();
        let check = Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn().and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait()
        });
        assert!(check.unwrap().success(), "{binary}'s bash completion parses");
    }
}

#[test]
fn no_clobber_keeps_existing_files_and_says_so() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    put(&work.path().join("client_downloads"), "file1.txt", b"mine, keep it");
    let args = ["get", "--no-clobber", "file1.txt", "big.bin", "docs/a b.txt"];
    let (code, _, err) = ftclient(work.path(), server.port, &args, b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("file1.txt") && err.contains("kept"), "{err}");
    let saved = work.path().join("client_downloads");
    assert_eq!(fs::read(saved.join("file1.txt")).unwrap(), b"mine, keep it");
    assert!(fs::read(saved.join("big.bin")).unwrap() == pattern(3 << 20));
    // Without the flag the copy is replaced.
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "file1.txt"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(saved.join("file1.txt")).unwrap(), b"hello from file1\n");
}

#[test]
fn json_output_parses_and_carries_exact_sizes() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let (code, out, err) = ftclient(work.path(), server.port, &["list", "--json"], b"");
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["big.bin", "docs/a b.txt", "file1.txt"]);
    assert_eq!(listed[0]["size"], 3 << 20);
    assert!(listed[0]["mtime"].as_str().unwrap().ends_with('Z'));

    let (code, out, err) = ftclient(work.path(), server.port, &["get", "--json", "big.bin", "file1.txt", "nope"], b"");
    assert_eq!(code, 3, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((summary["ok"].as_u64(), summary["failed"].as_u64()), (Some(2), Some(1)));
    assert_eq!(summary["bytes_received"], (3 << 20) + 17);
    let files = summary["files"].as_array().unwrap();
    let big = files.iter().find(|f| f["name"] == "big.bin").unwrap();
    assert_eq!(big["size"], 3 << 20);
    assert_eq!(big["xxh3"], ft::digest::Digest::of(&pattern(3 << 20)).to_string());
    assert_eq!(big["resumed_from"], 0);
    let nope = files.iter().find(|f| f["name"] == "nope").unwrap();
    assert_eq!((nope["status"].as_str(), nope["exit_code"].as_u64()), (Some("error"), Some(3)));
    assert!(summary["elapsed_secs"].as_f64().unwrap() > 0.0);
}

#[test]
fn progress_shows_on_a_terminal_and_nowhere_else() {
    let work = workdir();
    put(&work.path().join("server_downloads"), "mid.bin", &pattern(16 << 20));
    let server = RealServer::start(work.path(), &[]);
    let ftclient_cmd =
        |extra: &str| format!("{} --port {} {extra} get mid.bin -o out", bin("ftclient").display(), server.port);
    // `script` gives the client a pseudo-terminal, as a person's shell would.
    let on_tty = |extra: &str| {
        let out = Command::new("script")
            .args(["-qec", &ftclient_cmd(extra), "/dev/null"])
            .current_dir(work.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty("");
    assert!(shown.contains("mid.bin") && shown.contains("ETA") && shown.contains("MiB"), "{shown:?}");
    assert!(on_tty("-q").is_empty(), "-q shows nothing");
    let (code, out, err) = ftclient(work.path(), server.port, &["get", "mid.bin", "-o", "out"], b"");
    assert_eq!((code, out.len(), err.as_str()), (0, 0, ""), "nothing at all in a pipe");
    assert!(fs::read(work.path().join("out/mid.bin")).unwrap() == pattern(16 << 20));
}

#[test]
fn the_server_logs_one_json_object_per_line_with_per_connection_figures() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &["--log-format", "json"]);
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "file1.txt", "big.bin"], b"");
    assert_eq!(code, 0, "{err}");
    let closed = loop {
        let line = server.next_log().expect("a 'closed' log line");
        let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if record["fields"]["message"] == "closed" {
            break record;
        }
    };
    assert_eq!(closed["fields"]["requests"], 2);
    assert_eq!(closed["fields"]["bytes"], (3 << 20) + 17);
    assert!(closed["fields"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let out = Command::new(bin("ftserver")).args(["--cache-ttl", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a duration such as"));
}

#[test]
fn more_than_4096_connections_at_once_are_all_served() {
    // 4,096 is where tracing-subscriber's span registry gives out: connection threads must not
    // need it.
    let work = workdir();
    let mut server = RealServer::start(work.path(), &["--max-conns", "5000"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut held: Vec<std::net::TcpStream> = (0..4200).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    for s in &mut held {
        s.write_all(b"quit\n").unwrap();
    }
    for s in &held {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, "OK bye\n");
    }
    drop(held);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn the_shell_on_a_terminal_edits_lines_and_completes_remote_names() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let command = format!("{} --port {} shell", bin("ftclient").display(), server.port);
    // Under script(1) the shell has a terminal: "fil" + Tab completes to "file1.txt".
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"get fil\t\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("ft> "), "a prompt on a terminal: {screen}");
    assert_eq!(fs::read(work.path().join("client_downloads/file1.txt")).unwrap(), b"hello from file1\n");
}

#[test]
fn stats_counters_move_as_requests_come() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let stats = || -> std::collections::HashMap<String, u64> {
        let (code, out, err) = ftclient(work.path(), server.port, &["stats"], b"");
        assert_eq!(code, 0, "{err}");
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    };
    let before = stats();
    // One connection, answered in order: the first file1.txt is admitted before the second asks.
    ftclient(work.path(), server.port, &["get", "file1.txt", "nope", "file1.txt"], b"");
    let after = stats();
    let moved = |k: &str| after[k] - before[k];
    assert_eq!(moved("cache_misses"), 1 + 1, "the first file1.txt and nope");
    assert_eq!(moved("cache_hits"), 1, "the second file1.txt");
    assert_eq!(moved("cache_admitted"), 1);
    assert_eq!(moved("bytes_sent"), 2 * 17);
    assert_eq!(moved("requests"), 3 + 1, "three gets and this stats");
    assert_eq!(moved("connections_total"), 2, "the get and this stats");
    assert_eq!(after["cache_entries"], 1);
    assert_eq!(after["cache_cap"], 64 << 20);
    for key in ["uptime_secs", "connections_now", "requests", "cache_bytes", "cache_refused", "cache_expired"] {
        assert!(after.contains_key(key), "{key}");
    }
}

#[test]
fn messages_say_each_cause_once() {
    let work = workdir();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, _, err) = ftclient(work.path(), port, &["list"], b"");
    assert_eq!(code, 4, "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");

    fs::write(work.path().join("a-file"), b"not a folder").unwrap();
    for args in [&["--root", "missing"][..], &["--cache-dir", "a-file"][..]] {
        let out = Command::new(bin("ftserver"))
            .args(["--port", "0"])
            .args(args)
            .current_dir(work.path())
            .env("XDG_CONFIG_HOME", work.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let cause = if args[0] == "--root" { "No such file or directory" } else { "File exists" };
        assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn a_zero_timeout_is_a_usage_error() {
    let work = workdir();
    let out = Command::new(bin("ftclient")).args(["--timeout", "0", "list"]).current_dir(work.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--timeout") && err.contains("more than 0"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn listing_a_folder_that_is_missing_or_a_file_names_it_and_says_so() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let (code, _, err) = ftclient(work.path(), server.port, &["list", "nodir"], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("list nodir: no such folder"), "{err}");
    let (code, _, err) = ftclient(work.path(), server.port, &["list", "file1.txt"], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("list file1.txt: not a folder"), "{err}");
}

#[test]
fn nothing_a_server_sends_reaches_the_terminal_unescaped() {
    let work = workdir();
    let (addr, fake) = fake_server(b"ERR not-found \x1b]0;pwned\x07\x1b[2J\n".to_vec());
    let (code, _, err) = ftclient(work.path(), addr.port(), &["get", "file1.txt"], b"");
    fake.join().unwrap();
    assert_eq!(code, 3, "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\u{1b}]0;pwned\\u{7}"), "{err:?}");

    // A listed name that hides its real extension behind a right-to-left override.
    let (addr, fake) = fake_server("OK 1\n5 0 invoice\u{202e}fdp.exe\n".as_bytes().to_vec());
    let (code, out, err) = ftclient(work.path(), addr.port(), &["list"], b"");
    fake.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("invoice\\u{202e}fdp.exe") && !out.contains('\u{202e}'), "{out}");

    let (addr, fake) = fake_server(b"OK 1\nk\x1b[2J 1\n".to_vec());
    let (code, out, _) = ftclient(work.path(), addr.port(), &["stats"], b"");
    fake.join().unwrap();
    assert_eq!(code, 0);
    assert!(!out.contains(&0x1b), "{:?}", String::from_utf8_lossy(&out));
}

#[test]
fn the_exit_code_and_json_follow_the_order_of_the_request() {
    let work = workdir();
    put(&work.path().join("server_downloads"), "proj/run.sh", b"#!/bin/sh\n");
    let server = RealServer::start(work.path(), &[]);
    let out_dir = work.path().join("d");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("proj"), b"a file where a folder is needed").unwrap();
    let args = ["get", "--json", "-o", "d", "proj/run.sh", "nope", "big.bin", "file1.txt"];
    let (code, out, err) = ftclient(work.path(), server.port, &args, b"");
    assert_eq!(code, 6, "proj/run.sh failed first (local), before nope (not found): {err}");
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let order: Vec<&str> = json["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["proj/run.sh", "nope", "big.bin", "file1.txt"]);
    assert_eq!(json["files"][0]["exit_code"], 6);
    assert_eq!(json["files"][1]["exit_code"], 3);
}

#[test]
fn bench_says_what_its_errors_were_and_ctrl_c_on_stdout_mentions_no_part_files() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let (code, out, _) = ftclient(work.path(), server.port, &["bench", "nope", "--duration", "100ms"], b"");
    assert_eq!(code, 1);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("(the first: nope: no such file (not-found))"), "{out}");

    // -o - writes no .part: Ctrl-C must not say it kept any.
    let stalling = Stalling::start(format!("OK 100 xxh3={}\npart", ft::digest::Digest(0)).into_bytes());
    let child = Command::new(bin("ftclient"))
        .args(["--port", &stalling.port.to_string(), "get", "big.bin", "-o", "-"])
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    stalling.wait_sent();
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    stalling.finish();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted") && !err.contains(".part"), "{err}");
}

#[test]
fn a_size_the_disk_cannot_hold_is_refused_before_anything_is_written() {
    let work = workdir();
    let (addr, fake) =
        fake_server(format!("OK 18446744073709551615 xxh3={}\nsome bytes", ft::digest::Digest(0)).into_bytes());
    let started = std::time::Instant::now();
    let (code, _, err) = ftclient(work.path(), addr.port(), &["get", "huge.bin"], b"");
    fake.join().unwrap();
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("huge.bin") && err.contains("not enough space"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let saved = work.path().join("client_downloads");
    assert!(!saved.join("huge.bin").exists() && !saved.join("huge.bin.part").exists());
}

#[test]
fn a_server_that_announces_endless_replies_cannot_exhaust_the_client() {
    let work = workdir();
    // stats: a count no server has.
    let (addr, fake) = fake_server(b"OK 18446744073709551615\nk 1\nk 2\n".to_vec());
    let (code, _, err) = ftclient(work.path(), addr.port(), &["stats"], b"");
    fake.join().unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("stats lines announced"), "{err}");

    // list: an endless count, then half a million entries (about 30 MB of lines), printed as they
    // come: the client's memory must not grow with them.
    const LINES: usize = 500_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        next_request(&mut BufReader::new(&stream));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &stream);
        out.write_all(b"OK 18446744073709551615\n").unwrap();
        for i in 0..LINES {
            if writeln!(out, "5 0 a-rather-long-name-for-a-listed-file-number-{i:09}").is_err() {
                return;
            }
        }
    });
    let mut child = Command::new(bin("ftclient"))
        .args(["--port", &port.to_string(), "list"])
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child, with a zeroed rusage for the kernel to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32);
    // Reaped already by wait4 (for its resource usage); this only tells std so.
    let _ = child.wait();
    fake.join().unwrap();
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), 4, "the listing ended early: a connection failure ({status:#x})");
    let peak_mib = usage.ru_maxrss / 1024;
    eprintln!("client peak RSS {peak_mib} MiB for {LINES} entries");
    assert!(peak_mib < 30, "client peak RSS {peak_mib} MiB for {LINES} entries");
}

#[test]
fn a_plain_get_resumes_a_part_and_no_resume_starts_over() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let data = pattern(3 << 20);
    let saved = work.path().join("client_downloads");
    for (args, resumed_from) in
        [(&["get", "--json", "big.bin"][..], 1 << 20), (&["get", "--json", "--no-resume", "big.bin"][..], 0)]
    {
        fs::create_dir_all(&saved).unwrap();
        fs::write(saved.join("big.bin.part"), &data[..1 << 20]).unwrap();
        let (code, out, err) = ftclient(work.path(), server.port, args, b"");
        assert_eq!(code, 0, "{args:?}: {err}");
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["files"][0]["resumed_from"], resumed_from, "{args:?}");
        assert!(fs::read(saved.join("big.bin")).unwrap() == data);
        fs::remove_file(saved.join("big.bin")).unwrap();
    }
}

/// Slow (17,000 sockets and 15,000 threads): `cargo test --release --test integration
/// thousands_of_connections -- --ignored --nocapture` prints where the server starts refusing.
#[test]
#[ignore = "200,000 files; run by hand, see README"]
fn listings_nobody_reads_cost_the_server_bounded_memory() {
    const FILES: usize = 200_000;
    const PEERS: usize = 96;
    // In the build folder: creating 200,000 files is much faster there than in some /tmp.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = work.path().join("server_downloads");
    fs::create_dir(&root).unwrap();
    for i in 0..FILES {
        fs::write(root.join(format!("a-rather-long-name-for-a-listed-file-{i:07}.txt")), b"x").unwrap();
    }
    let server = RealServer::start(work.path(), &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    // Half ask as a client without list-end does (the count first), half with it.
    let peers: Vec<std::net::TcpStream> = (0..PEERS)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(if i % 2 == 0 { b"list\n" } else { b"hello 1 list-end\nlist\n" }).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Once every peer has bytes waiting, every listing has started to go out: a server that built
    // its listings before sending them has built them all by then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !peers.iter().all(|s| s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0)) {
        assert!(std::time::Instant::now() < deadline, "not every listing started");
        thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (peak, now) = (kib("VmHWM:") / 1024, kib("VmRSS:") / 1024);
    eprintln!("{PEERS} unread listings of {FILES} files: server peak RSS {peak} MiB, now {now} MiB");
    assert!(peak < 160, "server peak RSS {peak} MiB");
    drop(peers);
}

#[test]
#[ignore = "17,000 connections; run by hand, see README"]
fn thousands_of_connections_past_what_the_system_allows_get_busy_not_an_abort() {
    const SOCKETS: usize = 17_000;
    let work = workdir();
    let server = RealServer::start(work.path(), &["--max-conns", "30000"]);
    let allowed: usize =
        server.listening.split("max_conns=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(allowed < SOCKETS, "this machine allows {allowed}: raise SOCKETS to pass it");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let sockets: Vec<std::net::TcpStream> = (0..SOCKETS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Admitted ones hear nothing; refused ones get ERR busy at once. Wait (bounded) for the last
    // to be answered, then count.
    sockets[SOCKETS - 1].set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    let n = (&sockets[SOCKETS - 1]).read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"ERR busy"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let mut busy = 1; // the last one, read above
    for s in &sockets[..SOCKETS - 1] {
        s.set_nonblocking(true).unwrap();
        if s.peek(&mut buf).is_ok_and(|n| n > 0) {
            busy += 1;
        }
    }
    let admitted = SOCKETS - busy;
    eprintln!(
        "max-conns 30000 lowered to {allowed}; {admitted} of {SOCKETS} connections admitted, {busy} refused ERR busy"
    );
    assert!(admitted <= allowed && admitted + 64 >= allowed, "admitted {admitted}, allowed {allowed}");
    drop(sockets);
    // Still alive and serving.
    let deadline = std::time::Instant::now() + WAIT;
    let (code, _, err) = loop {
        let (code, out, err) = ftclient(work.path(), server.port, &["get", "file1.txt", "-o", "-"], b"");
        if code == 0 || std::time::Instant::now() > deadline {
            assert!(code != 0 || out == b"hello from file1\n");
            break (code, out, err);
        }
        thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_shell_reconnects_after_the_server_closed_an_idle_connection() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &["--idle-timeout", "300ms"]);
    let mut shell = Command::new(bin("ftclient"))
        .args(["--port", &server.port.to_string(), "shell"])
        .current_dir(work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"stats\n").unwrap();
    // The server closes the shell's connection once it has sat idle (it logs that) ...
    server.wait_log("closed");
    // ... and the next command still works, on a new connection.
    stdin.write_all(b"get file1.txt\nquit\n").unwrap();
    drop(stdin);
    let out = shell.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(fs::read(work.path().join("client_downloads/file1.txt")).unwrap(), b"hello from file1\n");
}

#[test]
fn ctrl_c_in_the_shell_stops_the_download_and_returns_to_the_prompt() {
    let work = workdir();
    let data = pattern(3 << 20);
    // First connection: half a body, then silence. Second: answers list and quit.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sent_tx, sent) = std::sync::mpsc::channel();
    let header = format!("OK {} xxh3={}\n", data.len(), ft::digest::Digest::of(&data));
    let half = data[..data.len() / 2].to_vec();
    let fake = thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        next_request(&mut BufReader::new(&first));
        (&first).write_all(header.as_bytes()).unwrap();
        (&first).write_all(&half).unwrap();
        sent_tx.send(()).unwrap();
        let (second, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(&second);
        let mut asked = Vec::new();
        for reply in [&b"OK 0\n"[..], b"OK bye\n"] {
            asked.push(next_request(&mut reader));
            (&second).write_all(reply).unwrap();
        }
        drop(first);
        asked
    });
    let mut shell = Command::new(bin("ftclient"))
        .args(["--port", &port.to_string(), "shell"])
        .current_dir(work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"get big.bin\n").unwrap();
    sent.recv_timeout(WAIT).unwrap();
    // Wait (bounded) for the half to land in the .part, then Ctrl-C.
    let part = work.path().join("client_downloads/big.bin.part");
    let deadline = std::time::Instant::now() + WAIT;
    while fs::metadata(&part).map_or(0, |m| m.len()) == 0 && std::time::Instant::now() < deadline {
        thread::yield_now();
    }
    sigint(&shell);
    stdin.write_all(b"list\nquit\n").unwrap();
    drop(stdin);
    let out = shell.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the shell carried on: {err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(fake.join().unwrap(), ["list\n", "quit\n"]);
    assert!(data.starts_with(&fs::read(&part).unwrap()), "the .part keeps a prefix, for get to continue");
}

#[test]
fn tls_with_a_new_server_then_a_changed_key_as_a_user_meets_them() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let fingerprint = server.listening.split("fingerprint=").nth(1).unwrap().trim().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{}", server.listening);
    let known_hosts = work.path().join("known_hosts");
    let client = |args: &[&str]| {
        let out = Command::new(bin("ftclient"))
            .args(["--port", &server.port.to_string(), "--tls"])
            .args(args)
            .current_dir(work.path())
            .env("FT_KNOWN_HOSTS", &known_hosts)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Unknown, off a terminal: refused, with the fingerprint and what to do.
    let (code, _, err) = client(&["list"]);
    assert_eq!(code, Some(9), "{err}");
    assert!(err.contains(&fingerprint) && err.contains("--accept-new"), "{err}");
    // Accepted, recorded, then known.
    let (code, out, err) = client(&["--accept-new", "get", "file1.txt", "-o", "-"]);
    assert_eq!((code, out), (Some(0), b"hello from file1\n".to_vec()), "{err}");
    let recorded = fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(recorded, format!("127.0.0.1:{} {fingerprint}\n", server.port));
    assert_eq!(client(&["list"]).0, Some(0));
    // `ftserver fingerprint` prints the same key.
    let out = Command::new(bin("ftserver"))
        .arg("fingerprint")
        .current_dir(work.path())
        .env("XDG_CONFIG_HOME", work.path().join(".config"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fingerprint);
    // Another key on record: OpenSSH's warning, exit 7, nothing saved.
    let other = ft::fingerprint::Fingerprint::of_spki(b"another key");
    fs::write(&known_hosts, format!("127.0.0.1:{} {other}\n", server.port)).unwrap();
    let (code, _, err) = client(&["get", "file1.txt"]);
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") && err.contains("line 1"), "{err}");
    assert!(!work.path().join("client_downloads/file1.txt").exists());
    // A pinned fingerprint is trusted for the run, whatever the file says.
    let (code, _, err) = client(&["--fingerprint", &fingerprint, "list"]);
    assert_eq!(code, Some(7), "the file's line still disagrees: {err}");
    fs::remove_file(&known_hosts).unwrap();
    let (code, _, err) = client(&["--fingerprint", &fingerprint, "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!known_hosts.exists(), "a pinned key is not recorded");
}

#[test]
fn tokens_as_an_operator_and_a_user_meet_them() {
    let work = workdir();
    let config_home = work.path().join(".config");
    let ftserver = |args: &[&str]| {
        let out = Command::new(bin("ftserver"))
            .args(args)
            .current_dir(work.path())
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Where other machines could connect, no tokens means no start (before anything is bound).
    let (code, _, err) = ftserver(&["--port", "0", "--bind", "0.0.0.0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--allow-anonymous") && err.contains("ftserver token add"), "{err}");
    // A token, printed once; the file keeps its hash; list shows names and rights only.
    let (code, token, err) = ftserver(&["token", "add", "alice"]);
    assert_eq!(code, Some(0), "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("ft_") && err.contains("not shown again"), "{token} {err}");
    let secret = &token[12..];
    let (_, listed, _) = ftserver(&["token", "list"]);
    assert!(listed.starts_with("alice\tread\t") && !listed.contains(secret), "{listed}");
    let stored = fs::read_to_string(config_home.join("ft/server_tokens")).unwrap();
    assert!(!stored.contains(secret));

    // The default auth file exists now, so the server requires a token.
    let mut server = RealServer::start_logging(work.path(), &[], "debug");
    assert!(server.listening.contains("tokens=1"), "{}", server.listening);
    let client = |env_token: Option<&str>, args: &[&str]| {
        let mut command = Command::new(bin("ftclient"));
        command.args(["--port", &server.port.to_string()]).args(args).current_dir(work.path()).env_remove("FT_TOKEN");
        if let Some(t) = env_token {
            command.env("FT_TOKEN", t);
        }
        let out = command.output().unwrap();
        (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, _, err) = client(None, &["list"]);
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("unauthorized") && err.contains("FT_TOKEN or --token-file"), "what to do: {err}");
    let (code, out, err) = client(Some(&token), &["get", "file1.txt", "-o", "-"]);
    assert_eq!((code, out), (Some(0), b"hello from file1\n".to_vec()), "{err}");
    // The same token from a file, which must be private.
    let token_file = work.path().join("token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    let (code, _, err) = client(None, &["--token-file", token_file.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(2), "a file others can read is refused: {err}");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = client(None, &["--token-file", token_file.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(0), "{err}");
    let wrong = format!("{}{}", &token[..12], "A".repeat(43));
    let (code, _, err) = client(Some(&wrong), &["list"]);
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("wrong secret for token") && err.contains("alice"), "{err}");
    // Revoked: refused by the running server.
    ftserver(&["token", "revoke", "alice"]);
    let (code, _, err) = client(Some(&token), &["list"]);
    assert_eq!(code, Some(8), "{err}");
    // The token file stays; --no-auth runs a server without tokens anyway, on this machine only.
    let anonymous = RealServer::start(work.path(), &["--no-auth"]);
    assert!(anonymous.listening.contains("auth=none"), "{}", anonymous.listening);
    let (code, out, err) = ftclient(work.path(), anonymous.port, &["get", "file1.txt", "-o", "-"], b"");
    assert_eq!((code, out), (0, b"hello from file1\n".to_vec()), "{err}");
    let (code, _, err) = ftserver(&["--port", "0", "--bind", "0.0.0.0", "--no-auth"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--allow-anonymous"), "{err}");

    // Not a trace of a secret in the server's log, even at debug level (read up to the last
    // refusal's line, which is logged before its reply is sent).
    let mut logs = Vec::new();
    while logs.iter().filter(|l: &&String| l.contains("auth failed")).count() < 2 {
        logs.push(server.next_log().expect("the server's log ended early"));
    }
    logs.extend(server.logs_so_far());
    let logs = logs.join("\n");
    assert!(logs.contains("authenticated") && logs.contains("token=alice") && logs.contains("auth <secret>"), "{logs}");
    assert!(!logs.contains(secret) && !logs.contains(&wrong[12..]), "a secret in the log:\n{logs}");
}

#[test]
fn a_server_for_other_machines_with_tokens_and_tls_as_readme_shows() {
    crate::util::in_private_net(|| {
        let work = workdir();
        let config_home = work.path().join(".config");
        let out = Command::new(bin("ftserver"))
            .args(["token", "add", "alice"])
            .current_dir(work.path())
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap();
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = Command::new(bin("ftserver"))
            .args(["fingerprint"])
            .current_dir(work.path())
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let server = RealServer::start(work.path(), &["--bind", "10.77.0.1"]);
        assert!(server.listening.contains("tokens=1"), "{}", server.listening);
        let client = |token: Option<&str>, args: &[&str]| {
            let mut command = Command::new(bin("ftclient"));
            command
                .args(["--host", "10.77.0.1", "--port", &server.port.to_string()])
                .args(args)
                .current_dir(work.path())
                .env("FT_KNOWN_HOSTS", work.path().join("known_hosts"))
                .env_remove("FT_TOKEN")
                .stdin(std::process::Stdio::null());
            if let Some(token) = token {
                command.env("FT_TOKEN", token);
            }
            let out = command.output().unwrap();
            (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
        };
        // As README's five commands: the token in FT_TOKEN, the key checked against the
        // fingerprint the server printed.
        let (code, out, err) = client(Some(&token), &["--fingerprint", &fingerprint, "list"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(String::from_utf8_lossy(&out).contains("file1.txt"));
        // TLS by default to this address, an unknown key refused off a terminal, then accepted.
        assert_eq!(client(Some(&token), &["list"]).0, Some(9));
        let (code, out, err) = client(Some(&token), &["--accept-new", "list"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(String::from_utf8_lossy(&out).contains("file1.txt"));
        let (code, out, err) = client(Some(&token), &["get", "big.bin", "-o", "-"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out == pattern(3 << 20));
        // No token: unauthorized. Plain text: the client will not send the token.
        assert_eq!(client(None, &["list"]).0, Some(8));
        let (code, _, err) = client(Some(&token), &["--plaintext", "list"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not sending the token"), "{err}");
    });
}

#[test]
fn a_certificate_from_an_authority_is_trusted_by_host_name_without_a_known_hosts_line() {
    use std::os::unix::fs::PermissionsExt;
    let work = workdir();
    // A small certificate authority, and a certificate it issues for "localhost".
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ft test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let keys = work.path().join("keys");
    fs::create_dir(&keys).unwrap();
    fs::write(keys.join("ca.pem"), ca.pem()).unwrap();
    fs::write(keys.join("cert.pem"), cert.pem()).unwrap();
    fs::write(keys.join("key.pem"), key.serialize_pem()).unwrap();
    fs::set_permissions(keys.join("key.pem"), fs::Permissions::from_mode(0o600)).unwrap();
    let (cert_arg, key_arg) = (keys.join("cert.pem"), keys.join("key.pem"));
    let server = RealServer::start(
        work.path(),
        &["--tls-cert", cert_arg.to_str().unwrap(), "--tls-key", key_arg.to_str().unwrap()],
    );
    let known_hosts = work.path().join("known_hosts");
    let client = |host: &str, roots: Option<&std::path::Path>| {
        let mut command = Command::new(bin("ftclient"));
        command
            .args(["--host", host, "--port", &server.port.to_string(), "--tls", "list"])
            .current_dir(work.path())
            .env("FT_KNOWN_HOSTS", &known_hosts)
            .stdin(std::process::Stdio::null());
        match roots {
            // The system's authorities, as far as the client can tell, are this one.
            Some(file) => command.env("SSL_CERT_FILE", file).env("SSL_CERT_DIR", work.path().join("none")),
            None => {
                command.env("SSL_CERT_FILE", work.path().join("none")).env("SSL_CERT_DIR", work.path().join("none"))
            }
        };
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let ca_file = keys.join("ca.pem");
    let (code, err) = client("localhost", Some(&ca_file));
    assert_eq!(code, Some(0), "vouched for by the authority: {err}");
    assert!(!known_hosts.exists(), "nothing to record");
    // The same certificate, but no authority vouches for it: an unknown server.
    assert_eq!(client("localhost", None).0, Some(9));
    // By address, the name in the certificate does not match: unknown too.
    assert_eq!(client("127.0.0.1", Some(&ca_file)).0, Some(9));
}

#[test]
fn on_a_terminal_an_unknown_server_is_shown_and_asked_about() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let fingerprint = server.listening.split("fingerprint=").nth(1).unwrap().trim().to_string();
    let known_hosts = work.path().join("known_hosts");
    let ask = |answer: &[u8]| {
        let command = format!("{} --port {} --tls list", bin("ftclient").display(), server.port);
        // Under script(1) the client has a terminal to ask on.
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(work.path())
            .env("FT_KNOWN_HOSTS", &known_hosts)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(answer).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, screen) = ask(b"no\n");
    assert!(screen.contains("can't be established") && screen.contains(&fingerprint), "{screen}");
    assert_ne!(code, Some(0), "{screen}");
    assert!(!known_hosts.exists());
    let (code, screen) = ask(b"yes\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("file1.txt"), "{screen}");
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), format!("127.0.0.1:{} {fingerprint}\n", server.port));
}

#[test]
fn get_r_fetches_a_folder_then_keeps_it_in_sync_as_a_user_sees_it() {
    let work = workdir();
    fs::create_dir_all(work.path().join("server_downloads/docs/empty")).unwrap();
    let server = RealServer::start(work.path(), &[]);
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "-r", "docs", "-o", "mirror"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("fetched 1 files") && err.contains("skipped 0 unchanged"), "{err}");
    assert_eq!(fs::read(work.path().join("mirror/docs/a b.txt")).unwrap(), b"spaced");
    assert!(work.path().join("mirror/docs/empty").is_dir());
    // Again: nothing to do. The whole server with '.', as JSON.
    let (code, out, err) = ftclient(work.path(), server.port, &["get", "-r", ".", "-o", "mirror", "--json"], b"");
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((summary["fetched"].as_u64(), summary["skipped"].as_u64()), (Some(2), Some(1)), "{summary}");
    // A local extra file, shown by --dry-run and removed by --delete.
    fs::write(work.path().join("mirror/docs/extra"), b"x").unwrap();
    let (code, out, _) =
        ftclient(work.path(), server.port, &["get", "-r", "docs", "-o", "mirror", "--delete", "--dry-run"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).into_owned()), (0, "delete docs/extra\n".to_string()));
    assert!(work.path().join("mirror/docs/extra").exists());
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "-r", "docs", "-o", "mirror", "--delete"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(!work.path().join("mirror/docs/extra").exists());
    // --delete without -r is a usage error; a missing folder is not found.
    let (code, _, _) = ftclient(work.path(), server.port, &["get", "--delete", "docs"], b"");
    assert_eq!(code, 2);
    let (code, _, err) = ftclient(work.path(), server.port, &["get", "-r", "nope"], b"");
    assert_eq!(code, 3, "{err}");
    // The shell too.
    let (code, _, err) =
        ftclient(work.path(), server.port, &["shell", "-o", "viashell"], b"get -r docs\nget -r docs\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(work.path().join("viashell/docs/a b.txt")).unwrap(), b"spaced");
    assert!(err.contains("fetched 1 files") && err.contains("skipped 1 unchanged"), "{err}");
}

#[test]
fn ftclient_put_uploads_files_and_names_each_failure() {
    let work = workdir();
    let local = work.path().join("mine");
    fs::create_dir_all(local.join("folder")).unwrap();
    fs::write(local.join("note.txt"), b"a note\n").unwrap();
    fs::write(local.join("big.bin"), pattern(3 << 20)).unwrap();
    let server = RealServer::start(work.path(), &["--allow-upload"]);
    let run = |args: &[&str]| ftclient(&local, server.port, args, b"");
    let (code, out, err) = run(&["put", "note.txt", "big.bin", "--to", "inbox"]);
    assert_eq!((code, out.len()), (0, 0), "{err}");
    let served = work.path().join("server_downloads/inbox");
    assert_eq!(fs::read(served.join("note.txt")).unwrap(), b"a note\n");
    assert!(fs::read(served.join("big.bin")).unwrap() == pattern(3 << 20));
    // Put again: unchanged files are not sent (exit 0); a folder and a missing file are each
    // named with their cause (exit 6, local I/O); the others still go.
    fs::write(local.join("new.txt"), b"new").unwrap();
    let (code, _, err) = run(&["put", "note.txt", "big.bin", "--to", "inbox"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ftclient: inbox/note.txt: unchanged on the server; not sent"), "{err}");
    let (code, _, err) = run(&["put", "note.txt", "folder", "missing.txt", "new.txt", "--to", "inbox"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("put inbox/folder: cannot read folder: not a regular file"), "{err}");
    assert!(err.contains("put inbox/missing.txt: cannot read missing.txt: "), "{err}");
    assert_eq!(fs::read(served.join("new.txt")).unwrap(), b"new");
    // Changed here, on a server that does not replace files: refused, and said why, once.
    fs::write(local.join("note.txt"), b"a new note\n").unwrap();
    let (code, _, err) = run(&["put", "note.txt", "--to", "inbox"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ftclient: put inbox/note.txt: it exists and differs, and this server does not replace files"),
        "{err}"
    );
    assert_eq!(err.matches("note.txt").count(), 1, "the name once: {err}");
    assert_eq!(fs::read(served.join("note.txt")).unwrap(), b"a note\n", "never replaced");
    // A server that takes no uploads says so.
    let plain = RealServer::start(work.path(), &[]);
    let (code, _, err) = ftclient(&local, plain.port, &["put", "new.txt"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("put new.txt: this server takes no uploads (ftserver --allow-upload)"), "{err}");
}

#[test]
fn ftclient_put_r_sends_folders_skips_what_the_server_has_and_replaces_only_with_force() {
    let work = workdir();
    let local = work.path().join("mine");
    fs::create_dir_all(local.join("proj/src")).unwrap();
    fs::write(local.join("proj/README"), b"read me\n").unwrap();
    fs::write(local.join("proj/src/main.rs"), b"fn main() {}\n").unwrap();
    fs::write(local.join("proj/big.bin"), pattern(2 << 20)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", local.join("proj/link")).unwrap();
    let server = RealServer::start(work.path(), &["--allow-upload=inbox", "--allow-overwrite"]);
    let run = |args: &[&str]| ftclient(&local, server.port, args, b"");
    let served = work.path().join("server_downloads/inbox");
    let (code, _, err) = run(&["put", "-r", "proj", "--to", "inbox"]);
    assert_eq!(code, 23, "a symlink not sent makes a partial transfer: {err}");
    assert!(err.contains("ftclient: proj/link: not sent: a symlink"), "{err}");
    assert!(err.contains("sent 3 files") && err.contains("skipped 0 unchanged"), "{err}");
    assert_eq!(fs::read(served.join("proj/src/main.rs")).unwrap(), b"fn main() {}\n");
    assert!(!served.join("proj/link").exists());
    fs::remove_file(local.join("proj/link")).unwrap();
    // Again: nothing to send. A changed file is sent and replaces the server's copy.
    let (code, _, err) = run(&["put", "-r", "proj", "--to", "inbox"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sent 0 files") && err.contains("skipped 3 unchanged"), "{err}");
    fs::write(local.join("proj/README"), b"read me twice\n").unwrap();
    let (code, out, err) = run(&["put", "-r", "proj", "--to", "inbox", "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (summary["sent"].as_u64(), summary["skipped"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(fs::read(served.join("proj/README")).unwrap(), b"read me twice\n");
    // An edit to a big file, with --delta (on by default off this machine): only the change.
    let mut big = pattern(2 << 20);
    big[1 << 20..(1 << 20) + 100].fill(0);
    fs::write(local.join("proj/big.bin"), &big).unwrap();
    let (code, out, err) = run(&["--delta", "put", "--json", "--to", "inbox/proj", "proj/big.bin"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let (sent, reused) = (summary["bytes_sent"].as_u64().unwrap(), summary["bytes_reused"].as_u64().unwrap());
    assert!(sent <= 4096 && sent + reused == 2 << 20, "{summary}");
    assert_eq!(summary["files"][0]["reused"].as_u64(), Some(reused), "{summary}");
    assert!(fs::read(served.join("proj/big.bin")).unwrap() == big);
    // --force sends even what is unchanged.
    let (code, _, err) = run(&["put", "-r", "proj", "--to", "inbox", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sent 3 files") && err.contains("skipped 0 unchanged"), "{err}");
    // A server that does not replace files refuses a changed one, and says so.
    let strict = RealServer::start(work.path(), &["--allow-upload=inbox"]);
    fs::write(local.join("proj/README"), b"read me thrice\n").unwrap();
    let (code, _, err) = ftclient(&local, strict.port, &["put", "-r", "proj", "--to", "inbox"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("put inbox/proj/README: it exists and differs, and this server does not replace files"),
        "{err}"
    );
    assert_eq!(fs::read(served.join("proj/README")).unwrap(), b"read me twice\n");
    fs::write(local.join("proj/README"), b"read me twice\n").unwrap();
    let readme = fs::metadata(served.join("proj/README")).unwrap().modified().unwrap();
    fs::File::options().write(true).open(local.join("proj/README")).unwrap().set_modified(readme).unwrap();
    // --checksum: the same bytes under another time are not sent again.
    let (code, _, err) = run(&["put", "-r", "proj", "--to", "inbox", "--checksum"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sent 0 files") && err.contains("skipped 3 unchanged"), "{err}");
    // Outside the upload folder: refused, named, and the exit code says so.
    let (code, _, err) = run(&["put", "proj/README"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("put README: uploads go beneath inbox/ on this server (denied)"), "{err}");
    // One file as JSON.
    let (code, out, err) = run(&["put", "--json", "--to", "inbox", "proj/src/main.rs"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["files"][0]["name"], "inbox/main.rs", "{summary}");
    assert_eq!(summary["files"][0]["status"], "ok", "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[test]
fn ftclient_put_shows_progress_on_a_terminal_and_the_server_logs_the_token() {
    let work = workdir();
    let tokens = work.path().join("tokens");
    let out = Command::new(bin("ftserver"))
        .args(["--auth-file", tokens.to_str().unwrap(), "token", "add", "uploader", "--write"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut server =
        RealServer::start_logging(work.path(), &["--allow-upload", "--auth-file", tokens.to_str().unwrap()], "info");
    fs::write(work.path().join("up.bin"), pattern(16 << 20)).unwrap();
    let command = format!("{} --port {} put up.bin --to inbox", bin("ftclient").display(), server.port);
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(work.path())
        .env("FT_TOKEN", &token)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("inbox/up.bin") && shown.contains("ETA") && shown.contains("MiB"), "{shown:?}");
    assert!(fs::read(work.path().join("server_downloads/inbox/up.bin")).unwrap() == pattern(16 << 20));
    let logged = server.wait_log("uploaded");
    assert!(logged.contains("token=uploader") && logged.contains("inbox/up.bin"), "{logged}");
    assert!(!logged.contains(&token[12..]), "never the token itself: {logged}");
}

#[test]
fn sigterm_with_drain_says_draining_keeps_serving_then_stops() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &["--drain", "4s"]);
    let health = |port: u16| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"health\r\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).unwrap();
        line
    };
    assert_eq!(health(server.port), "OK ready\n");
    server.signal(libc::SIGTERM);
    server.wait_log("health says draining");
    assert_eq!(health(server.port), "ERR draining shutting down: no new clients\n");
    let (code, out, err) = ftclient(work.path(), server.port, &["get", "file1.txt", "-o", "-"], b"");
    assert_eq!((code, out.as_slice()), (0, &b"hello from file1\n"[..]), "still served while draining: {err}");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn retry_resumes_a_download_cut_off_and_waits_out_a_busy_server() {
    let work = workdir();
    let server = RealServer::start(work.path(), &[]);
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    // The first connection is cut after 1 MiB of the 3 MiB file.
    let via = crate::util::cutting_forwarder(target, 1 << 20, 3);
    let args = ["--retry", "3", "--retry-delay", "50ms", "get", "big.bin", "file1.txt", "-o", "out"];
    let (code, _, err) = ftclient(work.path(), via.port(), &args, b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("retrying in 50ms (3 left)"), "{err}");
    assert!(err.contains("big.bin: resumed from byte "), "{err}");
    assert!(fs::read(work.path().join("out/big.bin")).unwrap() == pattern(3 << 20));
    assert_eq!(fs::read(work.path().join("out/file1.txt")).unwrap(), b"hello from file1\n");
    // Without --retry the same cut is an error (exit 4), its .part kept.
    let via = crate::util::cutting_forwarder(target, 1 << 20, 1);
    let (code, _, err) = ftclient(work.path(), via.port(), &["get", "big.bin", "-o", "again"], b"");
    assert_eq!(code, 4, "{err}");
    assert!(work.path().join("again/big.bin.part").exists());
    // A busy server: refused while another client holds its one connection, then served.
    let mut busy = RealServer::start_logging(work.path(), &["--max-conns", "1"], "debug");
    let mut held = crate::util::Wire::connect(format!("127.0.0.1:{}", busy.port).parse().unwrap());
    held.sync();
    let client = Command::new(bin("ftclient"))
        .args(["--port", &busy.port.to_string(), "--retry", "5", "--retry-delay", "100ms"])
        .args(["get", "file1.txt", "-o", "busy"])
        .current_dir(work.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    busy.wait_log("refused: too many connections");
    drop(held);
    let out = client.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("busy") && err.contains("retrying"), "{err}");
    assert_eq!(fs::read(work.path().join("busy/file1.txt")).unwrap(), b"hello from file1\n");
    // put goes on with what is left after a cut: the big file resumes from what the server holds.
    let up = RealServer::start(work.path(), &["--allow-upload"]);
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", up.port).parse().unwrap();
    // Cut 2 MiB into the upload.
    let via = crate::util::cutting_forwarder(target, 2 << 20, 3);
    fs::write(work.path().join("up.bin"), pattern(3 << 20)).unwrap();
    let args = ["--retry", "2", "--retry-delay", "50ms", "put", "up.bin", "--to", "inbox"];
    let (code, _, err) = ftclient(work.path(), via.port(), &args, b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("retrying") && err.contains("inbox/up.bin: resumed from byte "), "{err}");
    assert!(fs::read(work.path().join("server_downloads/inbox/up.bin")).unwrap() == pattern(3 << 20));
}

#[test]
fn tls_sessions_end_cleanly_and_a_lost_one_says_how_far_it_got() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &[]);
    let fingerprint = server.listening.split("fingerprint=").nth(1).unwrap().split_whitespace().next().unwrap();
    let fingerprint = fingerprint.to_string();
    let tls = |port: u16, args: &[&str]| {
        let mut all = vec!["--tls", "--fingerprint", &fingerprint];
        all.extend_from_slice(args);
        ftclient(work.path(), port, &all, b"")
    };
    for args in [&["list"][..], &["get", "file1.txt", "-o", "-"], &["get", "big.bin", "-o", "out"], &["stats"]] {
        let (code, _, err) = tls(server.port, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let mut closed = Vec::new();
    while closed.len() < 4 {
        let line = server.next_log().expect("the server's log ended early");
        if line.contains("closed") || line.contains("ended") {
            closed.push(line);
        }
    }
    for line in &closed {
        assert!(!line.contains("close_notify") && !line.contains("docs.rs"), "a normal session logged: {line}");
    }
    // Cut part-way through a TLS body: said plainly, with how far it got; the server counts
    // what it sent.
    let via = crate::util::cutting_forwarder(format!("127.0.0.1:{}", server.port).parse().unwrap(), 400_000, 1);
    let (code, _, err) = tls(via.port(), &["get", "big.bin", "-o", "cut"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("big.bin: connection lost after "), "{err}");
    assert!(!err.contains("close_notify") && !err.contains("docs.rs"), "{err}");
    let line = server.wait_log("peer=127.0.0.1");
    let bytes: u64 = line.split("bytes=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(bytes > 0, "a transfer cut part-way counts what went out: {line}");
}

#[test]
fn health_checks_are_not_logged_at_info_and_peer_text_in_debug_logs_is_escaped() {
    let work = workdir();
    let mut server = RealServer::start(work.path(), &[]);
    for _ in 0..5 {
        let mut w = crate::util::Wire::connect(format!("127.0.0.1:{}", server.port).parse().unwrap());
        assert_eq!(w.send("health\r\n").line(), "OK ready");
    }
    let mut w = crate::util::Wire::connect(format!("127.0.0.1:{}", server.port).parse().unwrap());
    w.sync().send("quit\n");
    assert_eq!(w.line(), "OK bye");
    let line = server.wait_log("closed");
    assert!(line.contains("requests=2"), "the first closing line at info is the stats session's: {line}");
    drop(server);
    let mut debug = RealServer::start_logging(work.path(), &[], "debug");
    let mut w = crate::util::Wire::connect(format!("127.0.0.1:{}", debug.port).parse().unwrap());
    w.send("get invoice\u{202e}fdp.exe\n");
    assert!(w.line().starts_with("ERR not-found "));
    let line = debug.wait_log("request=");
    assert!(line.contains("invoice\\u{202e}fdp.exe") && !line.contains('\u{202e}'), "{line}");
}

#[test]
fn help_says_what_is_there_and_one_mistake_gets_one_code_whatever_the_command() {
    let help = |bin_name: &str, args: &[&str]| {
        let out = Command::new(bin(bin_name)).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let client = help("ftclient", &["--help"]);
    assert!(client.contains("Download files from an ftserver, and upload files to one"), "{client}");
    let add = help("ftserver", &["token", "add", "--help"]);
    assert!(!add.contains("--identity") && !add.contains("--tls-cert") && !add.contains("--tls-key"), "{add}");
    assert!(add.contains("Also allow uploads") && !add.contains("reserved"), "{add}");
    assert!(help("ftserver", &["fingerprint", "--help"]).contains("--identity"));

    let work = workdir();
    fs::create_dir_all(work.path().join("proj")).unwrap();
    fs::write(work.path().join("proj/p.txt"), b"p").unwrap();
    let server = RealServer::start(work.path(), &["--allow-upload"]);
    let run = |args: &[&str]| ftclient(work.path(), server.port, args, b"");
    // A trailing slash, as tab completion leaves it, just works.
    for args in [&["list", "docs/"][..], &["get", "-r", "docs/", "-o", "o"], &["put", "-r", "proj/"]] {
        let (code, _, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    // What is not there: 3 on the server, 6 here, whichever command says it.
    for args in [&["list", "nope/"][..], &["get", "-r", "nope/"], &["get", "nope"], &["list", "nope"]] {
        let (code, _, err) = run(args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert_eq!(err.matches("nope").count(), 1, "named once: {err}");
    }
    for args in [&["put", "-r", "missing/"][..], &["put", "-r", "missing"], &["put", "missing"]] {
        let (code, _, err) = run(args);
        assert_eq!(code, 6, "{args:?}: {err}");
    }
}
