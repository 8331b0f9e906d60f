//! The meter registry through the API: operators look meters up, install,
//! change and remove them; a customer sees their own meters. Changes are
//! stored in the results database and reach the gateways through the
//! registry topic within seconds (its publisher runs beside the API).

use auth_core::registry::{Installation, Registry};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::session::Caller;
use crate::{ApiError, AppState, now_ms};

/// What the registry holds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySummary {
    /// Meters with at least one installation.
    pub meters: u64,
    pub installations: u64,
    /// The newest change (0: nothing registered yet).
    pub revision: i64,
}

/// A meter and its installations, oldest first (the fields of `auth registry export`, camelCase).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterInstallations {
    pub meter_id: u64,
    #[schema(value_type = Vec<Object>)]
    pub installations: Vec<Installation>,
}

/// A customer's meters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerMeters {
    pub customer_id: u64,
    #[schema(value_type = Vec<Object>)]
    pub installations: Vec<Installation>,
}

fn parse_meter(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("meter id `{text}` is not a non-negative integer")))
}

#[utoipa::path(get, path = "/api/v1/registry", tag = "registry",
    responses((status = 200, body = RegistrySummary), (status = 401, description = "not logged in"),
              (status = 403, description = "operators only")))]
pub(crate) async fn summary(State(state): State<AppState>, caller: Caller) -> Result<Json<RegistrySummary>, ApiError> {
    caller.must_be_operator()?;
    let (meters, installations, revision) = state.sessions.database().registry_summary().await.map_err(ApiError::results)?;
    Ok(Json(RegistrySummary { meters, installations, revision }))
}

#[utoipa::path(get, path = "/api/v1/registry/meters/{id}", tag = "registry",
    params(("id" = u64, Path, description = "meter id")),
    responses((status = 200, body = MeterInstallations), (status = 401, description = "not logged in"),
              (status = 403, description = "operators only"), (status = 404, description = "not in the registry")))]
pub(crate) async fn meter(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<MeterInstallations>, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let installations = state.sessions.database().meter_installations(meter_id).await.map_err(ApiError::results)?;
    if installations.is_empty() {
        return Err(ApiError::not_found(format!("meter {meter_id} is not in the registry")));
    }
    Ok(Json(MeterInstallations { meter_id, installations }))
}

#[utoipa::path(put, path = "/api/v1/registry/meters/{id}", tag = "registry",
    params(("id" = u64, Path, description = "meter id")),
    request_body(description = "every installation of the meter (a JSON array; the fields of `auth registry export`, camelCase)"),
    responses((status = 200, body = MeterInstallations), (status = 400, description = "bad installations, each with its reason"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn put_meter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<MeterInstallations>, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let installations: Vec<Installation> = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("expected a JSON array of installations: {err}")))?;
    if installations.is_empty() {
        return Err(ApiError::bad_request("no installations: DELETE removes a meter"));
    }
    let rows = installations
        .into_iter()
        .enumerate()
        .map(|(index, installation)| {
            let row = if installation.meter_id == meter_id {
                Ok(installation)
            } else {
                Err(format!("meterId {} is not the meter {meter_id} of the path", installation.meter_id))
            };
            (index + 1, row)
        })
        .collect();
    let registry = Registry::from_rows(rows).map_err(|bad| {
        ApiError::bad_request(bad.iter().map(|row| format!("installation {}: {}", row.line, row.reason)).collect::<Vec<_>>().join("; "))
    })?;
    let db = state.sessions.database();
    db.import_registry(&registry, false, now_ms()).await.map_err(ApiError::results)?;
    tracing::info!(meter_id, by = %caller.0.username, "meter installations replaced");
    Ok(Json(MeterInstallations { meter_id, installations: registry.meter(meter_id).to_vec() }))
}

#[utoipa::path(delete, path = "/api/v1/registry/meters/{id}", tag = "registry",
    params(("id" = u64, Path, description = "meter id")),
    responses((status = 204, description = "removed"), (status = 401, description = "not logged in"),
              (status = 403, description = "operators only"), (status = 404, description = "not in the registry")))]
pub(crate) async fn delete_meter(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<axum::http::StatusCode, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let db = state.sessions.database();
    if db.meter_installations(meter_id).await.map_err(ApiError::results)?.is_empty() {
        return Err(ApiError::not_found(format!("meter {meter_id} is not in the registry")));
    }
    db.remove_meters(&[meter_id], now_ms()).await.map_err(ApiError::results)?;
    tracing::info!(meter_id, by = %caller.0.username, "meter removed from the registry");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/customers/{id}/meters", tag = "customers",
    params(("id" = u64, Path, description = "customer id")),
    responses((status = 200, body = CustomerMeters), (status = 401, description = "not logged in"),
              (status = 403, description = "another customer's meters")))]
pub(crate) async fn customer_meters(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CustomerMeters>, ApiError> {
    let customer_id = id.parse().map_err(|_| ApiError::bad_request(format!("customer id `{id}` is not a non-negative integer")))?;
    caller.may_see_customer(customer_id)?;
    let installations = state.sessions.database().customer_installations(customer_id).await.map_err(ApiError::results)?;
    Ok(Json(CustomerMeters { customer_id, installations }))
}
