//! The README's "first ten minutes", run as written: `tests/dev.sh` brings up its
//! control plane, directory and operator (in a state directory of its own, with
//! the debug binary the suite has built), and every shell block between the
//! `readme-test` markers runs in bash, with the `export` line dev.sh prints, from
//! the repository. A block followed by `<!-- expect: TEXT -->` must print TEXT.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// One shell block of the section, and what its output must contain.
#[derive(Debug)]
struct Block {
    script: String,
    expect: Option<String>,
}

/// The shell blocks between `<!-- readme-test: NAME -->` and `<!-- /readme-test -->`.
fn blocks(readme: &str, name: &str) -> Vec<Block> {
    let start = format!("<!-- readme-test: {name} -->");
    let section = readme
        .split_once(&start)
        .unwrap_or_else(|| panic!("the README has no {start}"))
        .1
        .split_once("<!-- /readme-test -->")
        .expect("the section ends")
        .0;
    let mut found: Vec<Block> = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let script: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            found.push(Block {
                script: script.join("\n"),
                expect: None,
            });
        } else if let Some(text) = line
            .trim()
            .strip_prefix("<!-- expect: ")
            .and_then(|t| t.strip_suffix(" -->"))
        {
            found.last_mut().expect("an expect follows a block").expect = Some(text.into());
        }
    }
    found
}

/// `tests/dev.sh` running in the background; stopped (operator and servers) when dropped.
struct Dev {
    child: Child,
    env: Vec<(String, String)>,
}

impl Dev {
    /// Start it and wait for the `export` line it prints once the operator starts.
    fn start(state: &Path) -> Dev {
        let env = vec![
            ("USERSYNC_STATE".to_string(), state.display().to_string()),
            ("USERSYNC_SLAPD_PORT".into(), free_port().to_string()),
            ("USERSYNC_SLAPD_LDAPS_PORT".into(), free_port().to_string()),
            (
                "USERSYNC_DEV_BIN".into(),
                env!("CARGO_BIN_EXE_usersync").to_string(),
            ),
        ];
        let mut child = Command::new("bash")
            .arg("tests/dev.sh")
            .current_dir(repo())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs tests/dev.sh");
        let stderr = child.stderr.take().unwrap();
        let log = state.join("dev.log");
        // The export line, then the rest of its output (the operator's log) to a file.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(log).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
                if !sent && let Some(export) = line.trim().strip_prefix("export ") {
                    let _ = tx.send(export.to_string());
                    sent = true;
                }
            }
        });
        let export = rx
            .recv_timeout(Duration::from_secs(600))
            .expect("tests/dev.sh printed its export line");
        let mut dev = Dev { child, env };
        // `export KUBECONFIG=… PATH=…:$PATH`, as a person pastes it.
        let out = Command::new("bash")
            .args([
                "-c",
                &format!("export {export}; printf '%s\\n%s' \"$KUBECONFIG\" \"$PATH\""),
            ])
            .output()
            .unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        let (kubeconfig, path) = printed.split_once('\n').expect("two lines");
        dev.env.push(("KUBECONFIG".into(), kubeconfig.into()));
        dev.env.push(("PATH".into(), path.into()));
        dev
    }

    /// Run one block in bash, as a person would paste it; its output.
    fn run(&self, block: &Block) -> String {
        let started = Instant::now();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block.script])
            .current_dir(repo())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the README block failed after {:?}:\n{}\n--- output:\n{text}",
            started.elapsed(),
            block.script
        );
        text
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // dev.sh ends in `exec usersync run`: its PID is the operator's.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = Command::new("bash")
            .args(["tests/dev.sh", "down"])
            .current_dir(repo())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

#[test]
fn the_first_ten_minutes_run_as_the_readme_says() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = blocks(&readme, "first-ten-minutes");
    assert!(blocks.len() >= 3, "{blocks:?}");
    let state = PathBuf::from(format!("/tmp/usersync-readme-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let dev = Dev::start(&state);
    for block in &blocks {
        let out = dev.run(block);
        println!("$ {}\n{out}", block.script);
        if let Some(expect) = &block.expect {
            assert!(
                out.contains(expect.as_str()),
                "the README says this prints {expect:?}:\n{}\n--- output:\n{out}",
                block.script
            );
        }
    }
    drop(dev);
    let _ = std::fs::remove_dir_all(&state);
}
