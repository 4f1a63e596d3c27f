//! A third party's weir driver: the `shell` runtime ([`shell::ShellDriver`]), and the
//! `weir-custom` binary that links it into weir (src/main.rs).

pub mod shell;
