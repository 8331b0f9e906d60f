//! The dashboard's files, built into the binary (so `cargo run` needs no
//! npm): the page, its script and style, and the vendored uPlot and US
//! states' shapes (`api/web/vendor`, refreshed by `scripts/vendor-web.sh`).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

/// Path, content type, body.
const FILES: [(&str, &str, &str); 8] = [
    ("/", "text/html; charset=utf-8", include_str!("../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../web/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("../web/app.css")),
    ("/vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8", include_str!("../web/vendor/uPlot.iife.min.js")),
    ("/vendor/uPlot.min.css", "text/css; charset=utf-8", include_str!("../web/vendor/uPlot.min.css")),
    ("/vendor/us-states.json", "application/json", include_str!("../web/vendor/us-states.json")),
    ("/vendor/LICENSE.uPlot", "text/plain; charset=utf-8", include_str!("../web/vendor/LICENSE.uPlot")),
    ("/vendor/LICENSE.us-atlas", "text/plain; charset=utf-8", include_str!("../web/vendor/LICENSE.us-atlas")),
];

pub(crate) fn routes() -> Router<AppState> {
    FILES.iter().fold(Router::new(), |router, &(path, content_type, body)| {
        router.route(path, get(move || async move { ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response() }))
    })
}
