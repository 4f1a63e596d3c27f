//! Per-attempt overhead of the Docker driver: a no-op step through the driver versus a bare
//! `docker run --rm -i` of the same image (the CLI, timed from here), alternating, N times each.
//!
//! `cargo run --release -p weir-driver-docker --example docker_overhead -- [N]` (default 50). The engine
//! is `WEIR_TEST_DOCKER_URL`, else `DOCKER_HOST`, else the default socket; the image is built
//! from scratch with `/bin/busybox` (Debian's `busybox-static`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest, StepSpec};
use weir_core::testkit::driver::sample_input;
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50);
    let host = std::env::var("WEIR_TEST_DOCKER_URL")
        .ok()
        .filter(|h| !h.is_empty());
    let config = DockerDriverConfig {
        host: host.clone(),
        ..DockerDriverConfig::default()
    };
    let driver = DockerDriver::connect(config).await?;

    let dir = tempfile::tempdir()?;
    let step = dir.path().join("noop");
    std::fs::create_dir(&step)?;
    std::fs::copy("/bin/busybox", step.join("busybox"))?;
    std::fs::write(
        step.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\", \"true\"]\n",
    )?;
    let runtime = Map::from_iter([("type".to_string(), json!("docker"))]);
    let spec = StepSpec {
        function_id: "bench".into(),
        function_dir: dir.path().to_path_buf(),
        step_id: "noop".into(),
        path: Some(step.clone()),
        runtime: runtime.clone(),
        env: Default::default(),
        timeout: Duration::from_secs(60),
    };
    let image = driver.image_for(&spec).await?;
    let input = sample_input();
    let request = |attempt: u32| StepRequest {
        input: input.clone(),
        function_id: spec.function_id.clone(),
        function_dir: spec.function_dir.clone(),
        run_id: "bench-run".into(),
        step_id: spec.step_id.clone(),
        attempt,
        path: spec.path.clone(),
        runtime: runtime.clone(),
        timeout: Duration::from_secs(60),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    };

    println!("image {image}, {n} attempts each, alternating (after 3 warm-up rounds)");
    let (mut through_driver, mut bare) = (Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let start = Instant::now();
        let result = driver.execute(request(i as u32 + 1)).await?;
        let elapsed = start.elapsed();
        assert!(result.success, "the no-op step failed: {result:?}");
        let cli = docker_run(host.as_deref(), &image, &input).await?;
        if i >= 3 {
            through_driver.push(elapsed);
            bare.push(cli);
        }
    }
    let d = Stats::of(&mut through_driver);
    let b = Stats::of(&mut bare);
    println!("driver      : {d}");
    println!("docker run  : {b}");
    println!(
        "ratio driver / docker run: mean {:.2}, p50 {:.2}",
        d.mean / b.mean,
        d.p50 / b.p50
    );
    Ok(())
}

/// `docker run --rm -i <image> <input>` with the input on stdin too, as the driver passes it.
async fn docker_run(
    host: Option<&str>,
    image: &str,
    input: &Bytes,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut cmd = tokio::process::Command::new("docker");
    if let Some(host) = host {
        cmd.env("DOCKER_HOST", host);
    }
    let arg = std::str::from_utf8(input)?;
    cmd.args(["run", "--rm", "-i", image, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input).await;
    }
    let status = child.wait().await?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("docker run failed: {status}").into());
    }
    Ok(elapsed)
}

struct Stats {
    mean: f64,
    p50: f64,
    p99: f64,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        Stats {
            mean: samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64,
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
            self.mean, self.p50, self.p99
        )
    }
}
