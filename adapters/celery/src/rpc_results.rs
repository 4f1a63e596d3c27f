//! Results by `rpc://`, as a Celery worker sends them: one message per state change to the
//! client's own queue (the task message's `reply_to`) through the default exchange, with the
//! task id as `correlation_id` and the meta (`task_id`, `status`, `result`, `traceback`,
//! `children`) as a JSON body. Only the process that sent the task reads its replies; a reply
//! whose queue is gone is dropped by RabbitMQ, as it is for a worker.

use lapin::BasicProperties;
use weir_core::Result;

use crate::amqp_link::Publisher;
use crate::results::{TaskState, meta, now_iso};

/// Sends `rpc://` results on RabbitMQ.
#[derive(Clone, Debug)]
pub struct RpcResults {
    publisher: Publisher,
}

impl RpcResults {
    /// Replies through `publisher`.
    pub fn new(publisher: Publisher) -> Self {
        RpcResults { publisher }
    }

    /// Sends `state` as the result of `task_id` to the queue `reply_to`, and waits for
    /// RabbitMQ's confirm.
    pub async fn reply(&self, reply_to: &str, task_id: &str, state: &TaskState) -> Result<()> {
        let body = meta(task_id, state, &now_iso()).to_string();
        let properties = BasicProperties::default()
            .with_correlation_id(task_id.into())
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            // Celery's `result_persistent` is off by default: replies are transient.
            .with_delivery_mode(1);
        self.publisher
            .publish("", reply_to, body.as_bytes(), properties, false)
            .await
    }
}
