//! Runs one long step through the Docker driver and never returns on its own: the orphan test
//! kills this process (`kill -9`) mid-step, then checks a new driver removes the container.
//!
//! `hold <docker-host> <image> <run-id>`: the image's program should run for a long time.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, json};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, image, run_id] = args.as_slice() else {
        eprintln!("usage: hold <docker-host> <image> <run-id>");
        std::process::exit(2);
    };
    let driver = match DockerDriver::connect(DockerDriverConfig::with_host(host)).await {
        Ok(driver) => driver,
        Err(e) => {
            eprintln!("hold: {e}");
            std::process::exit(1);
        }
    };
    let request = StepRequest {
        input: Bytes::from_static(b"{}"),
        function_id: "hold".into(),
        function_dir: std::env::temp_dir(),
        run_id: run_id.clone(),
        step_id: "hold".into(),
        attempt: 1,
        path: None,
        runtime: Map::from_iter([
            ("type".to_string(), json!("docker")),
            ("image".to_string(), json!(image)),
        ]),
        timeout: Duration::from_secs(600),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    };
    eprintln!("hold: running a step of run {run_id} in {image}");
    match driver.execute(request).await {
        Ok(result) => println!("hold: the step ended: {result:?}"),
        Err(e) => println!("hold: the step failed: {e}"),
    }
}
