//! The `exchange*=` arguments: the policy for narrow job tokens (RFC 8693 token exchange).

#![forbid(unsafe_code)]

use super::Args;
use super::MAX_MIN_VALID;
use super::values::seconds;
use std::time::Duration;

impl Args {
    /// Applies `key` if it is one of the `exchange*=` arguments: `Ok(false)` if it is not one.
    pub(super) fn apply_exchange(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "exchange" => match token_core::exchange::Mode::parse(value) {
                Some(m) => self.exchange.mode = m,
                None => {
                    return Err(self.fail_closed(format!(
                        "exchange: '{value}' is not one of off, preferred, required"
                    )));
                }
            },
            "exchange_audience" => {
                let list: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                if list.is_empty() || list.iter().any(|a| a.chars().any(char::is_whitespace)) {
                    return Err(self.fail_closed(format!(
                        "exchange_audience: '{value}' is not a comma-separated list of audiences"
                    )));
                }
                self.exchange.audiences = list;
            }
            "exchange_scope" => {
                let list = token_core::exchange::split_scopes(value);
                if list.is_empty() {
                    return Err(self.fail_closed("exchange_scope: empty list".to_owned()));
                }
                self.exchange.scopes = list;
            }
            "exchange_max_lifetime" => {
                match seconds(value, Duration::from_secs(60), MAX_MIN_VALID) {
                    Ok(d) => self.exchange.max_lifetime = Some(d),
                    Err(e) => return Err(self.fail_closed(format!("exchange_max_lifetime: {e}"))),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Problem;
    use super::*;

    fn parse(argv: &[&str]) -> (Args, Vec<Problem>) {
        Args::parse(argv)
    }

    #[test]
    fn exchange_policy() {
        use token_core::exchange::Mode;
        let (a, p) = parse(&[
            "exchange=required",
            "exchange_audience=https://a.example, https://b.example",
            "exchange_scope=read write",
            "exchange_max_lifetime=3600",
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(a.exchange.mode, Mode::Required);
        assert_eq!(
            a.exchange.audiences,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(a.exchange.scopes, ["read", "write"]);
        assert_eq!(a.exchange.max_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(parse(&[]).0.exchange.mode, Mode::Off);
        assert_eq!(parse(&["exchange_scope=a,b"]).0.exchange.scopes, ["a", "b"]);
    }
}
