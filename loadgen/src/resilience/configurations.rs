//! The columns of the matrix: each [`Configuration`] as the aggregator's policies, and the
//! flags a user would give for them. Every one is the defaults but for what it names, so a
//! column differs from `defaults` by exactly that.

use aggregator::{Admission, HedgeAfter, HedgePolicy, Limit, RetryPolicy};

use crate::cli::Configuration;

/// Limits no load here comes near: nothing is refused.
const UNLIMITED: usize = 100_000;

/// The aggregator's policies for `configuration`.
pub fn policies(configuration: Configuration) -> aggregator::Config {
    let defaults = aggregator::Config::default();
    match configuration {
        Configuration::Defaults => defaults,
        // The defaults before limits followed the backends.
        Configuration::Fixed => aggregator::Config {
            backend_concurrency: Limit::Fixed(100),
            max_in_flight: Admission::Fixed(1000),
            ..defaults
        },
        Configuration::Off => aggregator::Config {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            hedge: HedgePolicy {
                after: None,
                ..HedgePolicy::default()
            },
            backend_concurrency: Limit::Fixed(UNLIMITED),
            max_in_flight: Admission::Fixed(UNLIMITED),
            ..defaults
        },
        Configuration::DefaultsHedge => aggregator::Config {
            hedge: HedgePolicy {
                after: Some(HedgeAfter::Percentile(95.0)),
                ..defaults.hedge
            },
            ..defaults
        },
    }
}

/// A column's name, as on the command line and in the JSON.
pub fn name(configuration: Configuration) -> &'static str {
    match configuration {
        Configuration::Defaults => "defaults",
        Configuration::Fixed => "fixed",
        Configuration::Off => "off",
        Configuration::DefaultsHedge => "defaults+hedge",
    }
}

/// The aggregator flags that make it.
pub fn flags(configuration: Configuration) -> &'static str {
    match configuration {
        Configuration::Defaults => "(no flags)",
        Configuration::Fixed => "--backend-concurrency 100 --max-in-flight 1000",
        Configuration::Off => {
            "--max-attempts 1 --backend-concurrency 100000 --max-in-flight 100000"
        }
        Configuration::DefaultsHedge => "--hedge-after p95",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_are_the_command_line_s() {
        for c in Configuration::value_variants() {
            let shown = c.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(Some(name(*c)), shown.as_deref());
        }
    }

    #[test]
    fn each_column_changes_only_what_it_names() {
        let d = policies(Configuration::Defaults);
        let fixed = policies(Configuration::Fixed);
        assert!(matches!(fixed.backend_concurrency, Limit::Fixed(100)));
        assert!(matches!(fixed.max_in_flight, Admission::Fixed(1000)));
        assert_eq!(fixed.retry.max_attempts, d.retry.max_attempts);
        let off = policies(Configuration::Off);
        assert_eq!(off.retry.max_attempts, 1);
        assert!(off.hedge.after.is_none());
        assert_eq!(off.deadline, d.deadline);
        let hedge = policies(Configuration::DefaultsHedge);
        assert!(matches!(hedge.hedge.after, Some(HedgeAfter::Percentile(p)) if p == 95.0));
        assert_eq!(hedge.hedge.budget_ratio, d.hedge.budget_ratio);
    }
}
