//! The statistics library's figures in their wire form (`cxloop.common.v1`), one mapping for
//! every service, so an estimate or a comparison reads the same whichever service sent it.

use cxloop_metrics::{Comparison, Estimate, Method};
use cxloop_proto::common::v1 as common;

/// An estimate on the wire: value, n, confidence level, interval, standard error, method.
pub fn estimate_pb(e: &Estimate) -> common::Estimate {
    common::Estimate {
        value: e.value,
        sample_size: e.n,
        confidence_level: e.confidence,
        interval_low: e.low,
        interval_high: e.high,
        standard_error: e.standard_error,
        method: match e.method {
            Method::Wald => common::IntervalMethod::Wald,
            Method::Wilson => common::IntervalMethod::Wilson,
            Method::StudentT => common::IntervalMethod::StudentT,
            Method::ParametricBootstrap => common::IntervalMethod::ParametricBootstrap,
        } as i32,
        defined: e.defined,
    }
}

/// A comparison on the wire: both sides, the difference with its standard error, interval,
/// p-value and degrees of freedom, and whether a test could be computed at all.
pub fn comparison_pb(c: &Comparison) -> common::Comparison {
    common::Comparison {
        a: Some(estimate_pb(&c.a)),
        b: Some(estimate_pb(&c.b)),
        difference: c.difference,
        standard_error: c.standard_error,
        confidence_level: c.confidence,
        interval_low: c.low,
        interval_high: c.high,
        p_value: c.p_value,
        degrees_of_freedom: c.degrees_of_freedom,
        defined: c.defined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reaches_the_wire() {
        let a = Estimate {
            value: 12.5,
            n: 40,
            confidence: 0.95,
            low: -3.0,
            high: 28.0,
            standard_error: 7.9,
            method: Method::Wald,
            defined: true,
        };
        let b = Estimate {
            method: Method::StudentT,
            defined: false,
            ..a
        };
        let c = Comparison {
            a,
            b,
            difference: 1.5,
            standard_error: 0.5,
            confidence: 0.95,
            low: 0.52,
            high: 2.48,
            p_value: 0.0027,
            degrees_of_freedom: 38.0,
            defined: true,
        };
        let w = comparison_pb(&c);
        let wa = w.a.unwrap();
        assert_eq!(
            (
                wa.value,
                wa.sample_size,
                wa.confidence_level,
                wa.interval_low,
                wa.interval_high
            ),
            (12.5, 40, 0.95, -3.0, 28.0)
        );
        assert_eq!(wa.standard_error, 7.9);
        assert_eq!(wa.method, common::IntervalMethod::Wald as i32);
        assert!(wa.defined);
        let wb = w.b.unwrap();
        assert_eq!(wb.method, common::IntervalMethod::StudentT as i32);
        assert!(!wb.defined);
        assert_eq!(
            (
                w.difference,
                w.standard_error,
                w.confidence_level,
                w.interval_low,
                w.interval_high
            ),
            (1.5, 0.5, 0.95, 0.52, 2.48)
        );
        assert_eq!(
            (w.p_value, w.degrees_of_freedom, w.defined),
            (0.0027, 38.0, true)
        );
    }
}
