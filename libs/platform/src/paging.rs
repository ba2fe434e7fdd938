//! Paging: bounded page sizes and opaque page tokens. A token is signed (HMAC-SHA256) over
//! the tenant, a fingerprint of the list's filters and the position, so it cannot be edited
//! to widen a query, replayed with other filters, or used by another tenant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::TenantId;
use crate::error::{ApiError, ApiResult};

/// Default page size when the client sends 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// A parsed page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: u64,
    /// Return rows whose key sorts after this one.
    pub after: Option<String>,
}

/// The key that signs page tokens.
#[derive(Clone)]
pub struct PageSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageSigner(<redacted>)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl PageSigner {
    /// A signer with this secret.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, tenant: &TenantId, filters: &str, after: &str) -> Vec<u8> {
        // new_from_slice only fails for algorithms with fixed key sizes; HMAC takes any.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        for part in [tenant.as_str(), filters, after] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// Parses `page_size` and `page_token` of a list call whose filters have this
    /// fingerprint (any string that changes when a filter changes).
    pub fn parse(
        &self,
        tenant: &TenantId,
        filters: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<Page> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(ApiError::invalid("page.page_size", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(ApiError::invalid(
                    "page.page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as u64,
        };
        if page_token.is_empty() {
            return Ok(Page { size, after: None });
        }
        let bad = || {
            ApiError::invalid(
                "page.page_token",
                "not a token from a previous call with the same filters",
            )
        };
        let (after_b64, mac_b64) = page_token.split_once('.').ok_or_else(bad)?;
        let after = URL_SAFE_NO_PAD.decode(after_b64).map_err(|_| bad())?;
        let after = String::from_utf8(after).map_err(|_| bad())?;
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).map_err(|_| bad())?;
        let expected = self.mac(tenant, filters, &after);
        if !constant_time_eq(&mac, &expected) {
            return Err(bad());
        }
        Ok(Page {
            size,
            after: Some(after),
        })
    }

    /// The token for the page after the row with this key.
    pub fn token(&self, tenant: &TenantId, filters: &str, after: &str) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(after.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.mac(tenant, filters, after))
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `page_size` and `page_token` of a list request's paging (zero and empty when unset).
pub fn request_args(p: Option<&cxloop_proto::common::v1::PageRequest>) -> (i32, &str) {
    p.map_or((0, ""), |p| (p.page_size, p.page_token.as_str()))
}

/// Most encoded bytes of items one page carries. Rows are bounded in number by the page
/// size, but not all rows are small: a response may hold 50 text answers of 5,000 characters
/// each (up to about 1 MB), so 1,000 of them would far exceed the 4 MiB a gRPC client accepts
/// by default, and a client refused the page could never reach the rows after it. A page
/// whose items would pass this budget ends early, with a token for the rest; it always holds
/// at least one item. Half the default limit leaves room for the envelope and for a client's
/// own other fields.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// What a message adds to a page as one item of a repeated field: the item, its length
/// prefix and its tag.
pub fn framed_len(m: &impl prost::Message) -> usize {
    let len = m.encoded_len();
    len + prost::length_delimiter_len(len) + 1
}

/// True once rows of these framed sizes hold all a page can send and one more row, so that
/// [`Listing::finish`] ends the page where it would with every row: a store that reads large
/// rows in chunks stops reading there.
pub fn page_is_full(framed_sizes: impl IntoIterator<Item = usize>) -> bool {
    let (mut rows, mut bytes) = (0usize, 0usize);
    for size in framed_sizes {
        rows += 1;
        bytes += size;
        if bytes > MAX_PAGE_BYTES && rows >= 2 {
            return true;
        }
    }
    false
}

/// One list call's paging: the tenant and the filters' fingerprint, bound once so that the
/// page asked for is parsed and the next page's token made against the same ones.
pub struct Listing<'a> {
    pages: &'a PageSigner,
    tenant: &'a TenantId,
    filters: &'a str,
}

impl PageSigner {
    /// The paging of one list call by `tenant` whose filters have this fingerprint (any string
    /// that changes when a filter changes; see [`filters_fingerprint`]).
    pub fn listing<'a>(&'a self, tenant: &'a TenantId, filters: &'a str) -> Listing<'a> {
        Listing {
            pages: self,
            tenant,
            filters,
        }
    }
}

impl Listing<'_> {
    /// Parses the call's `page_size` and `page_token` (see [`PageSigner::parse`]).
    pub fn parse(&self, page_size: i32, page_token: &str) -> ApiResult<Page> {
        self.pages
            .parse(self.tenant, self.filters, page_size, page_token)
    }

    /// Cuts the extra row a list query reads to tell whether another page exists, turns each
    /// row into the message the page sends (`encode`), ends the page early when its messages
    /// would pass [`MAX_PAGE_BYTES`], and makes the next page's token from the last sent row's
    /// key.
    pub fn finish<T, M: prost::Message>(
        &self,
        page: &Page,
        rows: Vec<T>,
        key: impl Fn(&T) -> String,
        encode: impl Fn(T) -> M,
    ) -> (Vec<M>, cxloop_proto::common::v1::PageResponse) {
        self.finish_within(page, rows, key, encode, MAX_PAGE_BYTES)
    }

    fn finish_within<T, M: prost::Message>(
        &self,
        page: &Page,
        rows: Vec<T>,
        key: impl Fn(&T) -> String,
        encode: impl Fn(T) -> M,
        budget: usize,
    ) -> (Vec<M>, cxloop_proto::common::v1::PageResponse) {
        let mut more = rows.len() as u64 > page.size;
        let mut out = Vec::with_capacity(rows.len().min(page.size as usize));
        let mut bytes = 0usize;
        // The key of the last row sent: the next page starts after it.
        let mut last = None;
        for row in rows.into_iter().take(page.size as usize) {
            let row_key = key(&row);
            let m = encode(row);
            let framed = framed_len(&m);
            if !out.is_empty() && bytes + framed > budget {
                more = true;
                break;
            }
            bytes += framed;
            out.push(m);
            last = Some(row_key);
        }
        let next_page_token = match (more, last) {
            (true, Some(last)) => self.pages.token(self.tenant, self.filters, &last),
            _ => String::new(),
        };
        (
            out,
            cxloop_proto::common::v1::PageResponse { next_page_token },
        )
    }
}

/// The filter fingerprint of a listing: its kind and its filter values joined by `|`, with
/// `\` and `|` inside a value escaped, so that two different sets of filters never give the
/// same fingerprint (`survey_id = "x|y"` against `survey_id = "x", touchpoint_id = "y"`).
/// A value without either character is written as it is, so fingerprints of such values are
/// the same as a plain join's.
pub fn filters_fingerprint(kind: &str, values: &[&str]) -> String {
    let mut out = String::from(kind);
    for v in values {
        out.push('|');
        for ch in v.chars() {
            if ch == '\\' || ch == '|' {
                out.push('\\');
            }
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_full_once_past_the_budget_with_one_row_more() {
        let mib = 1024 * 1024;
        assert!(!page_is_full([mib, mib / 2]));
        assert!(page_is_full([mib, mib, mib]));
        // One row alone past the budget is sent alone; the next row tells there is more.
        assert!(!page_is_full([3 * mib]));
        assert!(page_is_full([3 * mib, 10]));
        assert!(!page_is_full(std::iter::repeat_n(1000, 2000)));
    }

    #[test]
    fn different_filters_never_share_a_fingerprint() {
        assert_eq!(filters_fingerprint("plans", &["ou", "c"]), "plans|ou|c");
        assert_ne!(
            filters_fingerprint("r", &["x|y", "", "|"]),
            filters_fingerprint("r", &["x", "y", "|"])
        );
        assert_ne!(
            filters_fingerprint("r", &["x\\", "|"]),
            filters_fingerprint("r", &["x", "\\|"])
        );
        assert_eq!(filters_fingerprint("r", &["a|b\\c"]), "r|a\\|b\\\\c");
    }

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn token_round_trips_and_is_bound_to_tenant_and_filters() {
        let s = PageSigner::new(b"k");
        let tok = s.token(&t("a"), "f1", "0190-id");
        assert_eq!(
            s.parse(&t("a"), "f1", 10, &tok).ok(),
            Some(Page {
                size: 10,
                after: Some("0190-id".into())
            })
        );
        assert!(s.parse(&t("b"), "f1", 10, &tok).is_err());
        assert!(s.parse(&t("a"), "f2", 10, &tok).is_err());
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("0000"),
            tok.split_once('.').map(|x| x.1).unwrap_or("")
        );
        assert!(s.parse(&t("a"), "f1", 10, &forged).is_err());
        assert!(s.parse(&t("a"), "f1", 1001, "").is_err());
        assert_eq!(
            s.parse(&t("a"), "f1", 0, "").ok().map(|p| p.size),
            Some(DEFAULT_PAGE_SIZE)
        );
    }

    #[test]
    fn a_page_ends_before_its_items_pass_the_byte_budget() {
        let s = PageSigner::new(b"k");
        let tenant = t("a");
        // Five rows of 100 characters: each a 102-byte message (tag, length, text) framed
        // by its own length prefix and tag as a repeated field (104), so 300 bytes hold two.
        // prost encodes a String as google.protobuf.StringValue (field 1).
        let rows: Vec<String> = (0..5).map(|i| format!("{i}").repeat(100)).collect();
        // (items on the page, the row the next page starts after)
        let list = |size: u64, budget: usize| {
            let page = Page { size, after: None };
            let key = |r: &String| r[..1].to_owned();
            let (items, next) =
                s.listing(&tenant, "f")
                    .finish_within(&page, rows.clone(), key, |r| r, budget);
            let after = match next.next_page_token.as_str() {
                "" => None,
                token => s.parse(&tenant, "f", 1, token).ok().and_then(|p| p.after),
            };
            (items.len(), after)
        };
        assert_eq!(list(10, 300), (2, Some("1".into())));
        // One item larger than the budget still makes a page, or nothing could be listed.
        assert_eq!(list(10, 10), (1, Some("0".into())));
        // Within the budget: the page size and the extra row decide, as before.
        assert_eq!(list(5, 10_000), (5, None));
        assert_eq!(list(4, 10_000), (4, Some("3".into())));
    }
}
