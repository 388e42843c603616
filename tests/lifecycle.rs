//! End-to-end tests of a lab's life: `d11 up`, `d11 down` (idempotent,
//! `--all`), broken topologies, failed builds, panicking and killed tests.
//! Root only.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Set in the child of [`a_killed_test_leaves_no_lab_behind`].
const OWNER_CHILD: &str = "D11_TEST_OWNER_CHILD";

/// Not a test of its own (it returns at once): the child process of
/// [`a_killed_test_leaves_no_lab_behind`], this test binary run again with
/// [`OWNER_CHILD`] set. It brings a lab up through the tests' own guard,
/// prints its name and waits to be killed.
#[test]
fn owner_child() {
    if std::env::var_os(OWNER_CHILD).is_none() {
        return;
    }
    let lab = Lab::up("carrier.toml", "owner");
    // libtest has printed "test owner_child ... " on this line already.
    println!("owned-lab={}", lab.name);
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_killed_test_leaves_no_lab_behind() {
    let _s = serial();
    require_root();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_child", "--nocapture", "--test-threads=1"])
        .env(OWNER_CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let name = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| Some(l.split_once("owned-lab=")?.1.trim().to_string()));
    let Some(name) = name else {
        let _ = child.kill();
        panic!("the child brought no lab up: {:?}", child.wait());
    };
    assert_eq!(namespaces(&format!("{name}-")).len(), 7);
    assert!(Path::new("/run/d11").join(&name).exists());

    // SIGKILL: no destructor, no signal handler, no `d11 down`.
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = Instant::now();
    // The supervisor sees the owner's pidfd at once, gives the elements up
    // to 2 s to stop, then deletes the namespaces: 15 s is a generous bound.
    let bound = Duration::from_secs(15);
    let gone = || {
        namespaces(&format!("{name}-")).is_empty()
            && !Path::new("/run/d11").join(&name).exists()
            && lab_processes(&name).is_empty()
    };
    while !gone() && t0.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    if !gone() {
        // Leave nothing behind either way, then fail.
        let _ = d11(&["down", "--name", &name]);
        panic!("lab {name} outlived its killed owner by {took:?}");
    }
    eprintln!("lab {name} was gone {took:?} after its owner was killed");
    assert_gone(&name);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn down_leaves_nothing_and_is_safe_to_repeat() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "down");
    let name = lab.name.clone();
    // A user's own process inside the lab must not keep it alive.
    let _ = lab.exec("server", &["sh", "-c", "sleep 300 >/dev/null 2>&1 &"]);
    assert_eq!(namespaces(&format!("{name}-")).len(), 7);
    let st = lab.status();
    assert!(
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "element")
            .all(|n| n["state"] == "running"),
        "{st}"
    );
    // Each element runs the element program, which the search for
    // leftovers must see (or `assert_gone` would prove nothing).
    let procs = lab_processes(&name);
    assert_eq!(
        procs
            .iter()
            .filter(|p| p.contains("/d11-element --name"))
            .count(),
        5,
        "{procs:?}"
    );
    drop(lab);
    assert_gone(&name);
    let again = d11(&["down", "--name", &name]);
    assert!(again.status.success(), "second down: {}", text(&again));
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn without_the_element_program_up_names_the_missing_file_and_builds_nothing() {
    let _s = serial();
    require_root();
    let dir = Scratch::new("lone");
    let lone = dir.path("d11");
    std::fs::copy(d11_bin(), &lone).unwrap();
    let name = format!("t-lone-{}", std::process::id() % 100_000);
    let o = Command::new(&lone)
        .args(["up", "-t", &topology("carrier.toml").to_string_lossy()])
        .args(["--name", &name])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let missing = dir.path("d11-element");
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert_gone(&name);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_panicking_test_still_tears_its_lab_down() {
    let _s = serial();
    require_root();
    let r = std::thread::spawn(|| {
        let lab = Lab::up("carrier.toml", "panic");
        std::fs::write(std::env::temp_dir().join("d11-panic-lab"), &lab.name).unwrap();
        panic!("midway through a test");
    })
    .join();
    assert!(r.is_err());
    let name = std::fs::read_to_string(std::env::temp_dir().join("d11-panic-lab")).unwrap();
    assert_gone(&name);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn down_all_removes_every_lab() {
    let _s = serial();
    require_root();
    // A private state root, so `--all` cannot reach labs outside this test.
    let dir = Scratch::new("all");
    let root = dir.path("run");
    let names = ["t-all-a", "t-all-b"];
    for n in names {
        let o = Command::new(d11_bin())
            .env("D11_RUN_DIR", &root)
            .args([
                "up",
                "-t",
                &topology("carrier.toml").to_string_lossy(),
                "--name",
                n,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = Command::new(d11_bin())
        .env("D11_RUN_DIR", &root)
        .args(["down", "--all"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for n in names {
        assert_eq!(namespaces(&format!("{n}-")), Vec::<String>::new());
        assert!(lab_processes(n).is_empty());
    }
    assert_eq!(
        std::fs::read_dir(&root).map(|d| d.count()).unwrap_or(0),
        0,
        "state root emptied"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_broken_topology_gets_one_line_naming_the_key_and_leaves_nothing() {
    let _s = serial();
    require_root();
    let dir = Scratch::new("broken");
    let good = std::fs::read_to_string(topology("carrier.toml")).unwrap();
    let cases = [
        (
            good.replacen("192.0.2.1/30", "192.0.2.300/30", 1),
            "address",
        ),
        (
            good.replacen("role = \"router\"", "role = \"teleporter\"", 1),
            "role",
        ),
        (
            format!("{good}\n[[wires]]\na = \"phone:eth0\"\nb = \"nowhere:eth9\"\n"),
            "wires",
        ),
        (
            good.replacen("kind = \"host\"", "kind = \"host\"\ncolour = \"red\"", 1),
            "colour",
        ),
    ];
    for (i, (text_, key)) in cases.iter().enumerate() {
        let f = dir.path(&format!("broken{i}.toml"));
        std::fs::write(&f, text_).unwrap();
        let name = format!("t-broken{i}");
        let o = d11(&["up", "-t", &f.to_string_lossy(), "--name", &name]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "names `{key}`: {err}");
        assert_gone(&name);
    }
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_build_that_fails_removes_what_it_made_and_spares_others() {
    let _s = serial();
    require_root();
    let name = format!("t-midway-{}", std::process::id() % 100_000);
    // Someone else's namespace with the name the lab wants for c2: the build
    // must stop there, undo its own work and leave the stranger alone.
    let stranger = format!("{name}-c2");
    assert!(Command::new("ip")
        .args(["netns", "add", &stranger])
        .status()
        .unwrap()
        .success());
    let o = d11(&[
        "up",
        "-t",
        &topology("carrier.toml").to_string_lossy(),
        "--name",
        &name,
    ]);
    let left = namespaces(&format!("{name}-"));
    let _ = Command::new("ip")
        .args(["netns", "del", &stranger])
        .status();
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .trim_end()
            .lines()
            .count(),
        1,
        "{}",
        text(&o)
    );
    assert_eq!(
        left,
        vec![stranger],
        "only the stranger's namespace remains"
    );
    assert_gone(&name);
}
