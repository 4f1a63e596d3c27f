//! A small WebDriver client: Debian's Chromium, headless, driven through chromedriver (both
//! from the `chromium` and `chromium-driver` packages, which `scripts/test.sh` installs). The
//! W3C WebDriver protocol is JSON over HTTP, so a few calls with reqwest cover what the
//! dashboard tests need: open a page, find and click elements, type, run a script, take a
//! screenshot.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session; the driver (and the browser) stop when it is dropped.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver, leading its own process group, which the browser's processes join: the
/// whole group is killed when this is dropped (also when the session fails to start).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Where a program is: the environment variable `var`, else `default`.
fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`. `None` when they are
    /// not installed, unless `CI=true`: then a missing browser fails the test.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let chromedriver = program("WEIR_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = program("WEIR_TEST_CHROMIUM", "/usr/bin/chromium");
        if !std::path::Path::new(&chromedriver).exists()
            || !std::path::Path::new(&chromium).exists()
        {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {chromedriver} or {chromium} is missing (apt-get install chromium chromium-driver; scripts/test.sh does)"
            );
            eprintln!("skipped: no {chromedriver} / {chromium}");
            return None;
        }
        let port = super::free_port();
        use std::os::unix::process::CommandExt;
        let driver = Driver(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async {
                let status: Value = http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                status["value"]["ready"].as_bool()
            };
            if ready.await == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("tempdir");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Some(Browser {
            http,
            session: format!("{base}/session/{id}"),
            _driver: driver,
            _profile: profile,
        })
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test, naming it.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver JSON");
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "{method} {path}: {error}: {}",
                answer["value"]["message"].as_str().unwrap_or("")
            );
        }
        answer["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body: `return …`) in the page with `args`; its answer.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` answers something other than `null`/`false`, for up to 20 s; its
    /// answer. `what` names the wait in the failure.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.execute(script, json!([])).await;
            if !answer.is_null() && answer != json!(false) {
                return answer;
            }
            if Instant::now() >= deadline {
                let page = self
                    .execute("return document.body.innerText.slice(0, 2000)", json!([]))
                    .await;
                let console = self.console().await;
                panic!("timed out waiting for {what}; the page says: {page}\nconsole: {console}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the page wrote to the browser's console since the last call (errors included).
    pub async fn console(&self) -> Value {
        self.http
            .post(format!("{}/se/log", self.session))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("webdriver")
            .json::<Value>()
            .await
            .map(|answer| answer["value"].clone())
            .unwrap_or(Value::Null)
    }

    /// The element `css` selects (waiting up to 20 s for it to appear).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer: Value = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("webdriver JSON");
            if let Some(id) = answer["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Replaces the text of the input `css` selects with `text`, as typed.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The visible text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(path, bytes).expect("write screenshot");
    }

    /// Sends `keys` to the element `css` selects, as typed (`\u{E00C}` is Escape).
    pub async fn press(&self, css: &str, keys: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": keys})),
        )
        .await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }
}
