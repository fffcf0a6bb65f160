//! `[telemetry]`: where the host's traces go (OpenTelemetry over OTLP).
//! Absent, the host exports nothing and installs no exporter.

use serde::Deserialize;

/// The OTLP transport. Only OTLP/HTTP with protobuf bodies is built in: it
/// is what every collector (`otelcol`, Jaeger, Tempo) accepts on port 4318,
/// and it needs no gRPC stack in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: `POST {otlp_endpoint}/v1/traces`.
    HttpProtobuf,
}

/// `[telemetry]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `telemetry.otlp_endpoint`: the collector's OTLP/HTTP base URL, such
    /// as `http://127.0.0.1:4318`; spans go to `{otlp_endpoint}/v1/traces`.
    pub otlp_endpoint: String,
    /// `telemetry.protocol`.
    pub protocol: OtlpProtocol,
    /// `telemetry.service_name`: the `service.name` of every span
    /// (`botbox` unless set).
    pub service_name: String,
    /// `telemetry.sample_ratio`: the share of new traces recorded, 0.0 to
    /// 1.0 (1.0 unless set). A trace continued from an inbound
    /// `traceparent` follows the caller's sampled flag.
    pub sample_ratio: f64,
}

impl TelemetryConfig {
    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    protocol: Option<String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
}

/// Longest `otlp_endpoint` and `service_name` accepted.
const MAX_URL: usize = 2048;
const MAX_SERVICE_NAME: usize = 128;

pub(super) fn validate(
    raw: RawTelemetry,
    issue: &mut impl FnMut(String, String),
) -> Option<TelemetryConfig> {
    let protocol = match raw.protocol.as_deref() {
        None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some("grpc") => {
            issue(
                "telemetry.protocol".into(),
                "is `grpc`, which this build does not include; write `http/protobuf` and point \
                 otlp_endpoint at the collector's OTLP/HTTP port (4318 by default)"
                    .into(),
            );
            OtlpProtocol::HttpProtobuf
        }
        Some(other) => {
            issue(
                "telemetry.protocol".into(),
                format!(
                    "is `{}`; write `http/protobuf`",
                    crate::sanitize::for_log(other, 64)
                ),
            );
            OtlpProtocol::HttpProtobuf
        }
    };
    let Some(endpoint) = raw.otlp_endpoint else {
        issue(
            "telemetry.otlp_endpoint".into(),
            "is missing; write the collector's OTLP/HTTP URL, such as \"http://127.0.0.1:4318\", \
             or remove [telemetry] to export nothing"
                .into(),
        );
        return None;
    };
    if let Err(why) = check_endpoint(&endpoint) {
        issue("telemetry.otlp_endpoint".into(), why);
        return None;
    }
    let service_name = raw.service_name.unwrap_or_else(|| "botbox".into());
    if service_name.is_empty()
        || service_name.len() > MAX_SERVICE_NAME
        || service_name.chars().any(char::is_control)
    {
        issue(
            "telemetry.service_name".into(),
            format!("must be 1 to {MAX_SERVICE_NAME} printable characters"),
        );
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        issue(
            "telemetry.sample_ratio".into(),
            format!("is {sample_ratio}; it must be between 0.0 and 1.0"),
        );
    }
    Some(TelemetryConfig {
        otlp_endpoint: endpoint,
        protocol,
        service_name,
        sample_ratio,
    })
}

/// An `http://` or `https://` URL with a host and no credentials in it: the
/// endpoint is shown in errors and logs, so it must not carry a password.
fn check_endpoint(url: &str) -> Result<(), String> {
    let hint = "write the collector's OTLP/HTTP URL, such as \"http://127.0.0.1:4318\"";
    if url.len() > MAX_URL || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("is not a URL; {hint}"));
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!("must start with http:// or https://; {hint}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("has no host; {hint}"));
    }
    if authority.contains('@') {
        return Err(
            "carries credentials (user:password@); botbox shows this URL in logs, so it takes \
             none: run the collector on loopback or behind a local proxy that adds them"
                .into(),
        );
    }
    if rest.contains(['?', '#']) {
        return Err(format!(
            "must be a base URL without query or fragment; {hint}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawTelemetry) -> (Option<TelemetryConfig>, Vec<String>) {
        let mut issues = Vec::new();
        let got = validate(raw, &mut |k, m| issues.push(format!("{k}: {m}")));
        (got, issues)
    }

    #[test]
    fn an_endpoint_alone_is_enough_and_the_rest_has_defaults() {
        let (got, issues) = check(RawTelemetry {
            otlp_endpoint: Some("http://127.0.0.1:4318/".into()),
            ..RawTelemetry::default()
        });
        assert!(issues.is_empty(), "{issues:?}");
        let got = got.unwrap();
        assert_eq!(got.service_name, "botbox");
        assert_eq!(got.sample_ratio, 1.0);
        assert_eq!(got.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(got.traces_url(), "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn bad_values_are_named_by_key() {
        for (endpoint, needle) in [
            ("127.0.0.1:4318", "http://"),
            ("http://", "no host"),
            ("http://user:pw@collector:4318", "credentials"),
            ("http://c:4318?x=1", "query"),
        ] {
            let (_, issues) = check(RawTelemetry {
                otlp_endpoint: Some(endpoint.into()),
                ..RawTelemetry::default()
            });
            assert!(
                issues
                    .iter()
                    .any(|i| i.starts_with("telemetry.otlp_endpoint") && i.contains(needle)),
                "{endpoint}: {issues:?}"
            );
        }
        let (_, issues) = check(RawTelemetry {
            otlp_endpoint: Some("http://c:4318".into()),
            protocol: Some("grpc".into()),
            sample_ratio: Some(1.5),
            ..RawTelemetry::default()
        });
        assert_eq!(issues.len(), 2, "{issues:?}");
        let (_, issues) = check(RawTelemetry::default());
        assert!(
            issues[0].contains("otlp_endpoint: is missing"),
            "{issues:?}"
        );
    }
}
