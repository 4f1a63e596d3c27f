//! Execution roles given by name: `weir-lambda` becomes `arn:aws:iam::<account>:role/weir-lambda`,
//! with the account (and partition) of the caller, asked of STS once.

use weir_core::{Error, ErrorKind, Result};

/// The caller's account, from STS `GetCallerIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub partition: String,
    pub id: String,
}

/// Whether `role` is an ARN already (else it is a role name, possibly with a path).
pub(crate) fn is_arn(role: &str) -> bool {
    role.starts_with("arn:")
}

/// The ARN of role `name` in `account`.
pub(crate) fn role_arn(name: &str, account: &Account) -> String {
    format!(
        "arn:{}:iam::{}:role/{}",
        account.partition,
        account.id,
        name.trim_start_matches('/')
    )
}

/// Asks STS who the caller is.
pub(crate) async fn caller_account(sts: &aws_sdk_sts::Client) -> Result<Account> {
    let identity = sts.get_caller_identity().send().await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            "lambda driver: could not find the AWS account (STS GetCallerIdentity) to name the \
             execution role; set `runtime.role` to a role ARN to skip this",
        )
        .with_context("error", aws_sdk_sts::error::DisplayErrorContext(&e))
        .with_source(e)
    })?;
    let account = identity.account().map(str::to_owned);
    let partition = identity
        .arn()
        .and_then(|arn| arn.split(':').nth(1))
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
        .to_owned();
    match account {
        Some(id) => Ok(Account { partition, id }),
        None => Err(Error::internal(
            "lambda driver: STS GetCallerIdentity gave no account",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_arns_in_the_callers_partition() {
        let account = Account {
            partition: "aws-cn".into(),
            id: "123456789012".into(),
        };
        assert_eq!(
            role_arn("weir-lambda", &account),
            "arn:aws-cn:iam::123456789012:role/weir-lambda"
        );
        assert_eq!(
            role_arn("service-role/x", &account),
            "arn:aws-cn:iam::123456789012:role/service-role/x"
        );
        assert!(is_arn("arn:aws:iam::123456789012:role/x"));
        assert!(!is_arn("weir-lambda"));
    }
}
