//! Idempotent creates: a create carries a client `request_id`; the first result is
//! remembered in the service's own idempotency table in the same transaction as the
//! resource, so a retry returns the first result and never creates twice.

use sea_orm::{ConnectionTrait, DbBackend};
use sha2::{Digest, Sha256};

use crate::auth::TenantId;
use crate::db;
use crate::error::{ApiError, ApiResult};

/// What an earlier call with the same request id did.
#[derive(Debug, PartialEq, Eq)]
pub enum Prior {
    /// Nothing: this is the first call.
    None,
    /// The same request was done before and created this resource.
    Same(String),
}

/// Validates a request id: 1-128 printable ASCII characters.
pub fn parse_request_id(field: &str, s: &str) -> Result<String, (String, String)> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        Err((
            field.to_owned(),
            "must be 1-128 printable ASCII characters without spaces".into(),
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// A fingerprint of a request's content (e.g. its protobuf encoding).
pub fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// DDL for a service's idempotency table named `table`.
pub fn table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (
            tenant_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            request_id TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, operation, request_id)
        )"
    )
}

/// Looks up an earlier call. The same request id with other content is ALREADY_EXISTS.
pub async fn check<C: ConnectionTrait>(
    c: &C,
    table: &str,
    tenant: &TenantId,
    operation: &str,
    request_id: &str,
    hash: &str,
) -> ApiResult<Prior> {
    let backend: DbBackend = c.get_database_backend();
    let row = c
        .query_one_raw(db::stmt(
            backend,
            &format!(
                "SELECT request_hash, resource_id FROM {table} WHERE tenant_id = ? AND operation = ? AND request_id = ?"
            ),
            vec![tenant.as_str().into(), operation.into(), request_id.into()],
        ))
        .await?;
    match row {
        None => Ok(Prior::None),
        Some(r) => {
            let prior_hash: String = r.try_get_by_index(0)?;
            let resource: String = r.try_get_by_index(1)?;
            if prior_hash == hash {
                Ok(Prior::Same(resource))
            } else {
                Err(ApiError::AlreadyExists(format!(
                    "request_id {request_id:?} was already used for a different {operation} request"
                )))
            }
        }
    }
}

/// Remembers a call's result inside the caller's transaction.
pub async fn remember<C: ConnectionTrait>(
    c: &C,
    table: &str,
    tenant: &TenantId,
    operation: &str,
    request_id: &str,
    hash: &str,
    resource_id: &str,
) -> ApiResult<()> {
    let backend = c.get_database_backend();
    c.execute_raw(db::stmt(
        backend,
        &format!(
            "INSERT INTO {table} (tenant_id, operation, request_id, request_hash, resource_id, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        ),
        vec![
            tenant.as_str().into(),
            operation.into(),
            request_id.into(),
            hash.into(),
            resource_id.into(),
            db::now_micros().into(),
        ],
    ))
    .await
    .map_err(|e| {
        if db::is_unique_violation(&e) {
            // A concurrent call with the same request id won; the client retries and then
            // sees the first result.
            ApiError::Unavailable(format!(
                "a concurrent request with request_id {request_id:?} is in progress; retry"
            ))
        } else {
            e.into()
        }
    })?;
    Ok(())
}
