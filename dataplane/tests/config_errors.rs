//! Malformed and unsupported Envoy configs, each refused by the real binaries with a message
//! that names the resource and field. Each file in `configs/invalid/` states what it expects
//! (`# expect: ...`, or `"expect"` for JSON files, in the table below).

mod support;

use std::process::Command;

const JSON_EXPECT: &[(&str, &str)] = &[(
    "unsupported_filter.json",
    "static_resources.listeners[0](web).filter_chains[0].filters[0](envoy.filters.network.http_connection_manager).typed_config.http_filters[0](envoy.filters.http.decompressor).typed_config: extension type envoy.extensions.filters.http.decompressor.v3.Decompressor is not supported by zerohop",
)];

fn expectation(path: &std::path::Path) -> String {
    let name = path.file_name().unwrap().to_str().unwrap();
    if let Some((_, e)) = JSON_EXPECT.iter().find(|(f, _)| *f == name) {
        return e.to_string();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{name}: first line must be `# expect: ...`"))
        .to_owned()
}

fn invalid_configs() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    files
}

#[test]
fn control_check_refuses_each_invalid_config_naming_the_field() {
    for path in invalid_configs() {
        let out = Command::new(support::control_bin())
            .arg("--check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        let want = expectation(&path);
        assert!(
            stderr.contains(&want),
            "{}:\n  want: {want}\n  got:  {stderr}",
            path.display()
        );
    }
}

#[test]
fn zerohop_exits_with_the_control_error_on_an_invalid_config() {
    let path = &invalid_configs()[0];
    let shm = support::scratch("shm");
    let out = Command::new(support::bin())
        .arg("-c")
        .arg(path)
        .arg("--shm")
        .arg(&shm)
        .arg("--control-bin")
        .arg(support::control_bin())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expectation(path)), "{stderr}");
    assert!(stderr.contains("before publishing a config"), "{stderr}");
}
