//! The `strait` binary as a child process: its config, start, stop, signals and logs.

use super::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `strait run` child process with its own config file and HTTP port.
pub struct Strait {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The subcommand: `run`, or e.g. `migrate run`.
    command: Vec<String>,
    /// Extra environment, e.g. `STRAIT__…` overrides; kept across restarts.
    pub env: Vec<(String, String)>,
    /// The user id the process runs as, if not the test's own (see [`Strait::start_as`]);
    /// kept across restarts.
    uid: Option<u32>,
    _dir: tempfile::TempDir,
}

/// `strait <args> --config <config>` run to completion, which must succeed (else the
/// test fails with both of its streams); its standard output.
pub fn strait_ok(args: &[&str], config: &std::path::Path) -> String {
    let (ok, stdout, stderr) = strait_once(args, config);
    assert!(ok, "strait {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// `strait <args> --config <config>` run to completion, which must fail (else the test
/// fails with its output); its standard error.
pub fn strait_err(args: &[&str], config: &std::path::Path) -> String {
    let (ok, stdout, stderr) = strait_once(args, config);
    assert!(!ok, "strait {args:?} succeeded:\n{stdout}\n{stderr}");
    stderr
}

/// `strait <args> --config <config>` run to completion: whether it succeeded, and its
/// standard output and error.
fn strait_once(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-flow config between the test clusters. `extra` goes into the flow section.
pub fn flow_config(flow: &str, topics: &str, naming: &str, extra: &str) -> String {
    // A fresh group per test run: a killed run's member would otherwise hold partitions
    // until the group's `session.timeout.ms` expires it.
    let group = unique(&format!("strait-test-{flow}"));
    format!(
        r#"
[clusters.primary]
bootstrap_servers = "{PRIMARY}"

[clusters.secondary]
bootstrap_servers = "{SECONDARY}"

[flows.{flow}]
source = "primary"
target = "secondary"
topics = ["{topics}"]
naming = "{naming}"
refresh_interval = "2s"
group_id = "{group}"
{extra}

[tuning]
commit_interval = "500ms"
"#
    )
}

impl Strait {
    pub fn start(config: &str) -> Self {
        Self::spawn_command(config, &["run"])
    }

    /// [`Strait::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, &["run"], env)
    }

    /// Like [`Strait::start`], for another long-running subcommand (`migrate run`).
    pub fn spawn_command(config: &str, command: &[&str]) -> Self {
        Self::spawn(config, command, &[])
    }

    /// `strait run` as user `uid` (`setpriv`, which execs, so the child's pid is
    /// Strait's own): a firewall rule matching that owner then cuts this process alone off
    /// from a cluster. Needs root.
    pub fn start_as(config: &str, uid: u32) -> Self {
        Self::spawn_with(config, &["run"], &[], Some(uid))
    }

    /// `strait <command>` on `config` with extra environment variables.
    pub fn spawn(config: &str, command: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with(config, command, env, None)
    }

    fn spawn_with(config: &str, command: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if uid.is_some() {
            // Another user must read the config in it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = dir.path().join("strait.toml");
        let port = free_port();
        let full = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{config}");
        std::fs::write(&path, full).unwrap();
        let command: Vec<String> = command.iter().map(|c| c.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, log) = spawn_child(&path, dir.path(), &command, &env, uid);
        Self {
            child,
            port,
            config: path,
            log,
            command,
            env,
            uid,
            _dir: dir,
        }
    }

    /// Stops the process (SIGKILL if still running) and starts a new one on the same
    /// config file with a new HTTP port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = free_port();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(
            &format!("127.0.0.1:{}", self.port),
            &format!("127.0.0.1:{port}"),
        );
        std::fs::write(&self.config, text).unwrap();
        let (child, log) = spawn_child(
            &self.config,
            self._dir.path(),
            &self.command,
            &self.env,
            self.uid,
        );
        self.child = child;
        self.log = log;
        self.port = port;
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                panic!(
                    "strait did not exit after SIGTERM ({}):\n{}",
                    thread_stacks(&pid),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "strait still running:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_default()
    }
}

fn spawn_child(
    config: &std::path::Path,
    dir: &std::path::Path,
    command: &[String],
    env: &[(String, String)],
    uid: Option<u32>,
) -> (Child, PathBuf) {
    let log = dir.join(format!("strait-{}.log", rand::rng().random::<u32>()));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = match uid {
        Some(uid) => {
            let mut setpriv = Command::new("setpriv");
            let uid = uid.to_string();
            setpriv
                .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_strait"));
            setpriv
        }
        None => Command::new(env!("CARGO_BIN_EXE_strait")),
    };
    let child = cmd
        .args(command)
        .arg("--config")
        .arg(config)
        // STRAIT_TEST_LOG (a RUST_LOG filter) for more detail when chasing a failure.
        .env(
            "RUST_LOG",
            std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    (child, log)
}

impl Drop for Strait {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            // The whole log outlives the temporary directory, for a closer look.
            let kept = std::env::temp_dir()
                .join(format!("strait-failed-{}.log", rand::rng().random::<u32>()));
            let _ = std::fs::copy(&self.log, &kept);
            eprintln!(
                "--- strait log (last 60 lines; all of it in {}) ---",
                kept.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // STRAIT_TEST_KEEP_LOGS=<dir> keeps every run's log, passed or not: a restart or a
        // stall that a test's generous wait absorbs shows up there first.
        if let Some(dir) = std::env::var_os("STRAIT_TEST_KEEP_LOGS") {
            let name = format!(
                "{}-{}.log",
                std::thread::current()
                    .name()
                    .unwrap_or("strait")
                    .replace("::", "-"),
                rand::rng().random::<u32>()
            );
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, std::path::Path::new(&dir).join(name));
        }
    }
}

/// Every thread's stack of process `pid`, written to a file for a process that hangs:
/// where it waits is what a log cannot tell. Says so when gdb is not installed.
fn thread_stacks(pid: &str) -> String {
    let stacks = Command::new("gdb")
        .args(["-p", pid, "-batch", "-ex", "thread apply all bt"])
        .output();
    match stacks {
        Ok(out) => {
            let path = std::env::temp_dir().join(format!("strait-stacks-{pid}.txt"));
            match std::fs::write(&path, &out.stdout) {
                Ok(()) => format!("its threads' stacks are in {}", path.display()),
                Err(e) => format!("its threads' stacks could not be written: {e}"),
            }
        }
        Err(e) => format!("no thread stacks: gdb did not run: {e}"),
    }
}
