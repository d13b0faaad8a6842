//! What every HTML page shares, the dashboard's and the approval pages': the security headers
//! (SPEC §11) and reading the dashboard's session cookie.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// The session cookie's name.
pub const COOKIE: &str = "anx_session";

/// The headers every HTML page sends (SPEC §11), with the page's own content security policy:
/// no framing, no referrer (secure links are in addresses), nothing cached, no sniffing.
pub fn headers(mut response: Response, csp: &'static str) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The session's token in a `Cookie` header. Cookies are `name=value` pairs separated by
/// `; ` (RFC 6265 §4.2.1); ours is plain ASCII, so splitting is the whole parser.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}
