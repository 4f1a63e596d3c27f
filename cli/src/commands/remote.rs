//! Talking to a running server's `/v1` API: its address, the API key, JSON or text output.

use clap::Args;
use serde_json::Value;
use weir_core::Error;

/// Where the server is and how to answer, shared by the commands that read its API.
#[derive(Debug, Args)]
pub struct Remote {
    /// The server.
    #[arg(long, default_value = super::DEFAULT_URL, env = "WEIR_URL", global = true)]
    pub url: String,
    /// The API key, when the server requires one (`weir serve` with `api_keys`).
    #[arg(long, env = "WEIR_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    /// The URL of `path` on the server, then `segments` (each escaped: a run id cannot reach
    /// another path), with the query `pairs` that have a value (no `?` without one).
    pub fn url(
        &self,
        path: &str,
        segments: &[&str],
        pairs: &[(&str, Option<String>)],
    ) -> weir_core::Result<String> {
        let base = self.url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| Error::invalid(format!("bad --url {base:?}: {e}")))?;
        if !segments.is_empty() {
            url.path_segments_mut()
                .map_err(|()| Error::invalid(format!("bad --url {base:?}")))?
                .extend(segments);
        }
        if pairs.iter().any(|(_, v)| v.is_some()) {
            let mut q = url.query_pairs_mut();
            for (key, value) in pairs {
                if let Some(v) = value {
                    q.append_pair(key, v);
                }
            }
        }
        Ok(url.into())
    }

    /// Calls `url` with `method`, the API key if any, and `body` (JSON) if any: the answer's
    /// status and body (JSON, or the text as a JSON string when it is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> weir_core::Result<(u16, Value)> {
        self.call_with(method, url, body, "application/json").await
    }

    /// [`call`](Self::call) with a body of `content_type`.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> weir_core::Result<(u16, Value)> {
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("cannot reach {url}")).with_source(e))?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| Error::unavailable("unreadable answer").with_source(e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// GETs `url` and answers its body as bytes; an error answer is an error.
    pub async fn fetch_bytes(&self, url: &str) -> weir_core::Result<bytes::Bytes> {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("cannot reach {url}")).with_source(e))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| Error::unavailable("unreadable answer").with_source(e))?;
        if status != 200 {
            return Err(Error::invalid(format!(
                "{url}: {status} {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(bytes)
    }

    /// The message of an error answer: its `error`, or its text (not every server in the way
    /// answers weir's JSON errors: a proxy's HTML page).
    pub fn error_message(body: &Value) -> String {
        match body {
            Value::String(text) => text.trim().to_owned(),
            other => other["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string()),
        }
    }

    /// Calls `url` with `method` (and the API key, if any); prints the server's error and
    /// gives `None` on a non-200 answer.
    async fn call_ok(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> weir_core::Result<Option<Value>> {
        let (status, body) = self.call(method, url, None).await?;
        if status != 200 {
            eprintln!("error {status}: {}", Self::error_message(&body));
            return Ok(None);
        }
        if body.is_string() {
            return Err(Error::unavailable(format!(
                "the answer of {url} is not JSON"
            )));
        }
        Ok(Some(body))
    }

    /// GETs `url` and prints the answer: indented JSON with `--json`, else what `render`
    /// makes of it. The exit code: 1 when the server answered an error (printed).
    pub async fn print<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        render: impl FnOnce(&T) -> String,
    ) -> weir_core::Result<i32> {
        self.call_and_print(reqwest::Method::GET, url, render).await
    }

    /// POSTs to `url` (no body) and prints the answer as [`Remote::print`] does.
    pub async fn post_and_print<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        render: impl FnOnce(&T) -> String,
    ) -> weir_core::Result<i32> {
        self.call_and_print(reqwest::Method::POST, url, render)
            .await
    }

    /// DELETEs `url` and prints the answer as [`Remote::print`] does.
    pub async fn delete_and_print<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        render: impl FnOnce(&T) -> String,
    ) -> weir_core::Result<i32> {
        self.call_and_print(reqwest::Method::DELETE, url, render)
            .await
    }

    async fn call_and_print<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        render: impl FnOnce(&T) -> String,
    ) -> weir_core::Result<i32> {
        let Some(body) = self.call_ok(method, url).await? else {
            return Ok(1);
        };
        if self.json {
            out!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        } else {
            outp!("{}", render(&serde_json::from_value(body)?));
        }
        Ok(0)
    }
}
