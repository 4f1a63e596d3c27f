//! Every call to the engine has a deadline: an engine that accepts connections and never
//! answers (a hung dockerd) fails the call with a retryable error naming it, after
//! `api_timeout`. Needs no Docker engine: the hung engine is a socket that never answers.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use weir_core::ErrorKind;
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

#[tokio::test]
async fn an_engine_that_never_answers_fails_after_the_api_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = DockerDriverConfig {
        api_timeout: Duration::from_secs(1),
        ..DockerDriverConfig::with_host(format!("tcp://{addr}"))
    };
    let started = Instant::now();
    let err = match DockerDriver::connect(config).await {
        Ok(_) => panic!("connected to an engine that never answers"),
        Err(e) => e,
    };
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        err.message().contains(
            "did not answer within the driver's api_timeout while asking for its API version"
        ),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "failed after {waited:?}, not after its 1 s api_timeout"
    );
}
