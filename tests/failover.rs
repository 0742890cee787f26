//! Failover with real parts: three ftservers, each in its own network namespace, behind a real
//! HAProxy (configured from `contrib/haproxy.cfg`) in another, and clients in a fourth. While
//! the clients fetch a folder holding a 256 MiB file, one replica is killed with SIGKILL
//! mid-transfer (the one carrying the most transfers) and another drained with SIGTERM. Every client must finish with byte-identical
//! files, and the replicas' logs must show the clients' real addresses (PROXY protocol v2).
//!
//! Needs root (network namespaces) and HAProxy (`.ci/run` installs Debian's `haproxy`); skipped
//! with a message otherwise. Only addresses inside the namespaces it makes are used, and the
//! namespaces are removed even when the test fails.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{bin, pattern};

/// How many replicas and clients.
const REPLICAS: usize = 3;
const CLIENTS: usize = 3;
/// The big file's size in MiB: enough that every client is mid-transfer at the kill (at an
/// eighth of it) and at the drain (at three eighths), and still fetching for the seconds the
/// drain and HAProxy's checks take. (It was 1 GiB: four times the bytes for the same proof.)
const BIG_MIB: u64 = 256;
/// The longest the whole run may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The namespaces and processes of one run; all removed on drop, failure or not.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, what: &str) -> String {
        format!("ft{what}-{}", self.tag)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("the ip command (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn add_ns(&mut self, name: &str) {
        self.ip(&["netns", "add", name]);
        self.namespaces.push(name.to_string());
        self.ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair between two namespaces, each end with its address (/24).
    fn link(&self, (a, a_addr): (&str, &str), (b, b_addr): (&str, &str), n: usize) {
        let (va, vb) = (format!("fta{n}"), format!("ftb{n}"));
        self.ip(&["link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b]);
        for (ns, dev, addr) in [(a, &va, a_addr), (b, &vb, b_addr)] {
            self.ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            self.ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// Starts `program args` in namespace `ns`, its stderr sent line by line (with the time each
    /// arrived) to the returned receiver.
    fn spawn(
        &mut self,
        ns: &str,
        program: &Path,
        args: &[&str],
        cwd: &Path,
    ) -> (u32, mpsc::Receiver<(Instant, String)>) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        self.children.push(child);
        (pid, rx)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Waits (at most `within`) for a line containing `needle`; the time it came and the line.
fn wait_line(
    rx: &mpsc::Receiver<(Instant, String)>,
    needle: &str,
    within: Duration,
    seen: &mut Vec<String>,
) -> (Instant, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return (at, line);
                }
            }
            Err(_) => panic!("no line with {needle:?} within {within:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

/// Everything `rx` has now, kept in `into`.
fn drain(rx: &mpsc::Receiver<(Instant, String)>, into: &mut Vec<String>) {
    while let Ok((_, line)) = rx.try_recv() {
        into.push(line);
    }
}

/// Established connections to the replica in namespace `ns` (its port 9000).
fn established(ns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htn", "state", "established", "( sport = :9000 )"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Bytes beneath `dir`, `.part` files included (what a client has so far).
fn bytes_in(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = fs::read_dir(&d) else { continue };
        for e in read.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn digest_of(path: &Path) -> ft::digest::Digest {
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    ft::digest::hash_file(&file, len, None).unwrap().0
}

#[test]
fn clients_behind_haproxy_finish_whole_through_a_kill_and_a_drain() {
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let Ok(haproxy) = which("haproxy") else {
        eprintln!("skipped: no haproxy (Debian: apt-get install haproxy; .ci/run does)");
        return;
    };
    let started = Instant::now();
    let work = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" }).unwrap();
    let root = work.path().join("root");
    fs::create_dir_all(root.join("set")).unwrap();
    // The set: a big file and 40 small ones, the same folder for every replica (shared root).
    {
        let mut big = fs::File::create(root.join("set/big.bin")).unwrap();
        let chunk = pattern(1 << 20);
        for _ in 0..BIG_MIB {
            std::io::Write::write_all(&mut big, &chunk).unwrap();
        }
    }
    for i in 0..40 {
        crate::util::put(&root, &format!("set/small/f{i:02}.bin"), &pattern(1000 + i * 997));
    }
    let mut lab = Lab { tag: std::process::id().to_string(), namespaces: Vec::new(), children: Vec::new() };
    let (lb, cl) = (lab.ns("lb"), lab.ns("cl"));
    lab.add_ns(&lb);
    lab.add_ns(&cl);
    let replicas: Vec<String> = (1..=REPLICAS).map(|i| lab.ns(&format!("r{i}"))).collect();
    for r in &replicas {
        lab.add_ns(r);
    }
    for (i, r) in replicas.iter().enumerate() {
        lab.link((&lb, &format!("10.91.{}.1", i + 1)), (r, &format!("10.91.{}.2", i + 1)), i + 1);
    }
    lab.link((&lb, "10.91.9.1"), (&cl, "10.91.9.2"), 9);
    // One identity shared by every replica: the clients pin its fingerprint.
    let identity = work.path().join("identity.pem");
    let out = Command::new(bin("ftserver")).args(["fingerprint", "--identity"]).arg(&identity).output().unwrap();
    assert!(out.status.success());
    let fingerprint = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut logs = Vec::new();
    let mut pids = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let cache = work.path().join(format!("cache{}", i + 1));
        let addr = format!("10.91.{}.2", i + 1);
        let args = [
            "--root",
            root.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
            "--bind",
            &addr,
            "--port",
            "9000",
            "--proxy-protocol",
            "--trusted-proxy",
            "10.91.0.0/16",
            "--allow-anonymous",
            "--drain",
            "3s",
            "--grace",
            "60s",
        ];
        let (pid, rx) = lab.spawn(r, &bin("ftserver"), &args, work.path());
        let mut seen = Vec::new();
        wait_line(&rx, "listening on", Duration::from_secs(30), &mut seen);
        pids.push(pid);
        logs.push((rx, seen));
    }
    // HAProxy, configured from the shipped file: only the addresses change.
    let shipped = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/haproxy.cfg")).unwrap();
    let mut config = String::new();
    for line in shipped.lines() {
        let line = line.replace("bind 10.0.0.1:9000", "bind 10.91.9.1:9000").replace("log stdout", "log stderr");
        let line = match line.trim_start().strip_prefix("server ft") {
            Some(rest) => {
                let n: usize = rest[..1].parse().unwrap();
                format!("    server ft{n} 10.91.{n}.2:9000")
            }
            None => line,
        };
        config.push_str(&line);
        config.push('\n');
    }
    assert!(config.contains("10.91.3.2:9000") && config.contains("send-proxy-v2"), "{config}");
    let config_path = work.path().join("haproxy.cfg");
    fs::write(&config_path, &config).unwrap();
    let (_, lb_log) = lab.spawn(&lb, &haproxy, &["-db", "-f", config_path.to_str().unwrap()], work.path());
    let mut lb_seen = Vec::new();
    // Ready once a client gets through.
    let ftclient = bin("ftclient");
    let client_args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--host", "10.91.9.1", "--port", "9000", "--tls", "--fingerprint", &fingerprint]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &cl])
            .arg(&ftclient)
            .args(client_args(&["list", "set"]))
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        if Instant::now() >= deadline {
            drain(&lb_log, &mut lb_seen);
            panic!(
                "never through HAProxy: {}\nHAProxy said:\n{}",
                String::from_utf8_lossy(&out.stderr),
                lb_seen.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    // The clients, each fetching the set, retrying as a client of replicas should.
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let out_dir = work.path().join(format!("client{c}"));
        let args = client_args(&[
            "--retry",
            "20",
            "--retry-delay",
            "200ms",
            "get",
            "-r",
            "set",
            "-o",
            out_dir.to_str().unwrap(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, rx) = lab.spawn(&cl, &ftclient, &args, work.path());
        clients.push((out_dir, rx, Vec::new(), lab.children.len() - 1));
    }
    // Watch progress: once every client has an eighth of the big file, kill the busiest replica;
    // once they have three eighths, drain the busiest of the others. The longest time any client's bytes did not grow is its stall.
    let mut last = [(0u64, Instant::now()); CLIENTS];
    let mut stall = [Duration::ZERO; CLIENTS];
    let (mut killed_at, mut drained) = (None, false);
    let (mut victim, mut drainee) = (0, 1);
    let total: u64 = (BIG_MIB << 20) + (0..40).map(|i| 1000 + i * 997).sum::<u64>();
    loop {
        assert!(started.elapsed() < LIMIT, "the clients did not finish in time");
        let mut finished = 0;
        for (c, (dir, rx, seen, index)) in clients.iter_mut().enumerate() {
            drain(rx, seen);
            let status = lab.children[*index].try_wait().unwrap();
            if let Some(status) = status.filter(|s| !s.success()) {
                drain(rx, seen);
                let mut others = String::new();
                for (rx, seen) in logs.iter_mut() {
                    drain(rx, seen);
                    others.push_str(&seen.join("\n"));
                    others.push_str("\n--\n");
                }
                drain(&lb_log, &mut lb_seen);
                panic!(
                    "client {c} failed ({status}):\n{}\nreplicas:\n{others}HAProxy:\n{}",
                    seen.join("\n"),
                    lb_seen.join("\n")
                );
            }
            let done = status.is_some();
            let now = bytes_in(dir);
            if now > last[c].0 {
                last[c] = (now, Instant::now());
            } else if !done {
                stall[c] = stall[c].max(last[c].1.elapsed());
            }
            finished += usize::from(done);
        }
        let least = last.iter().map(|(b, _)| *b).min().unwrap_or(0);
        if killed_at.is_none() && least >= (BIG_MIB << 20) / 8 {
            // The replica carrying the most transfers now: the kill must cut someone off.
            victim = (0..REPLICAS).max_by_key(|&i| established(&replicas[i])).unwrap_or(0);
            assert_eq!(unsafe { libc::kill(pids[victim] as i32, libc::SIGKILL) }, 0);
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some() && !drained && least >= (BIG_MIB << 20) * 3 / 8 {
            drainee = (0..REPLICAS).filter(|&i| i != victim).max_by_key(|&i| established(&replicas[i])).unwrap_or(0);
            assert_eq!(unsafe { libc::kill(pids[drainee] as i32, libc::SIGTERM) }, 0);
            drained = true;
        }
        if finished == CLIENTS {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(killed_at.is_some() && drained, "the faults happened before the clients finished");
    // Every client finished, with every file whole.
    let mut retries = 0;
    for (dir, rx, seen, index) in clients.iter_mut() {
        drain(rx, seen);
        let status = lab.children[*index].wait().unwrap();
        assert!(status.success(), "a client failed ({status}):\n{}", seen.join("\n"));
        retries += seen.iter().filter(|l| l.contains("retrying in")).count();
        assert_eq!(digest_of(&dir.join("set/big.bin")), digest_of(&root.join("set/big.bin")));
        for i in 0..40 {
            let name = format!("set/small/f{i:02}.bin");
            assert_eq!(fs::read(dir.join(&name)).unwrap(), fs::read(root.join(&name)).unwrap(), "{name}");
        }
        assert!(!dir.join("set/big.bin.part").exists());
    }
    // HAProxy saw replica 1 go down; the live replicas logged the clients' real address.
    let (killed, drained_name) = (format!("ft{} is DOWN", victim + 1), format!("ft{} is DOWN", drainee + 1));
    let spared = format!("ft{} is DOWN", 6 - (victim + 1) - (drainee + 1));
    let (down_at, _) = wait_line(&lb_log, &killed, Duration::from_secs(30), &mut lb_seen);
    drain(&lb_log, &mut lb_seen);
    let killed_at = killed_at.unwrap_or(down_at);
    assert!(down_at >= killed_at, "the replica was down before it was killed:\n{}", lb_seen.join("\n"));
    // The drained replica's check failed on its answer (draining), not on a refused connection.
    let (_, drained_down) = match lb_seen.iter().find(|l| l.contains(&drained_name)) {
        Some(line) => (Instant::now(), line.clone()),
        None => wait_line(&lb_log, &drained_name, Duration::from_secs(30), &mut lb_seen),
    };
    if !drained_down.contains("TCPCHK did not match") {
        let (rx, seen) = &mut logs[drainee];
        drain(rx, seen);
        panic!("{drained_down}\nreplica 2:\n{}\nHAProxy:\n{}", seen.join("\n"), lb_seen.join("\n"));
    }
    assert!(!lb_seen.iter().any(|l| l.contains(&spared)), "{}", lb_seen.join("\n"));
    assert!(retries > 0, "no client was cut off by the kill");
    let mark_down = down_at - killed_at;
    let mut real = 0;
    for (rx, seen) in logs.iter_mut() {
        drain(rx, seen);
        real += seen.iter().filter(|l| l.contains("peer=10.91.9.2:")).count();
        // Under the proxy's own address only its health checks (one request, no bytes).
        let as_proxy =
            seen.iter().filter(|l| l.contains("closed") && l.contains("peer=10.91.") && !l.contains("peer=10.91.9.2:"));
        for line in as_proxy {
            assert!(line.contains("requests=1 bytes=0"), "a transfer logged under the proxy's address: {line}");
        }
    }
    assert!(real > 0, "no replica logged a client's real address");
    eprintln!(
        "failover: {CLIENTS} clients, {} files and {} bytes each; retries {retries}; longest stall {:?}; \
         HAProxy marked the killed replica down after {:?}; whole run {:?}",
        41,
        total,
        stall.iter().max().unwrap(),
        mark_down,
        started.elapsed()
    );
}

/// The full path of `program` on PATH (also /usr/sbin, where Debian puts haproxy).
fn which(program: &str) -> Result<PathBuf, ()> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
