//! Page selection by name glob or id range, as `--pages` takes it.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::page::PageMeta;

/// A set of pages: any of several id ranges or name globs.
#[derive(Debug, Clone, Default)]
pub struct PageSelector {
    ranges: Vec<(u64, u64)>,
    globs: Option<GlobSet>,
    patterns: Vec<String>,
}

impl PageSelector {
    /// Parses patterns: `N` or `N-M` (ids, inclusive) or a glob over page names
    /// (`*`, `?`, `[abc]`, `{a,b}`), e.g. `model.layers.1[0-5].*`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<PageSelector> {
        let mut ranges = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut any_glob = false;
        for p in patterns {
            let p = p.as_ref();
            let ids = match p.split_once('-') {
                Some((a, b)) => a.parse::<u64>().ok().zip(b.parse::<u64>().ok()),
                None => p.parse::<u64>().ok().map(|a| (a, a)),
            };
            match ids {
                Some((a, b)) if a <= b => ranges.push((a, b)),
                Some(_) => return Err(Error::Invalid(format!("--pages {p}: empty id range"))),
                None => {
                    builder.add(Glob::new(p).map_err(|e| Error::Invalid(format!("--pages {p}: {e}")))?);
                    any_glob = true;
                }
            }
        }
        let globs = if any_glob {
            Some(builder.build().map_err(|e| Error::Invalid(e.to_string()))?)
        } else {
            None
        };
        Ok(PageSelector {
            ranges,
            globs,
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
        })
    }

    /// True when the selector was given no pattern (it then selects every page).
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the page with this id and metadata is selected.
    pub fn matches(&self, id: u64, meta: &PageMeta) -> bool {
        self.is_all()
            || self.ranges.iter().any(|&(a, b)| (a..=b).contains(&id))
            || self
                .globs
                .as_ref()
                .zip(meta.name.as_deref())
                .is_some_and(|(g, n)| g.is_match(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: &str) -> PageMeta {
        PageMeta {
            name: Some(n.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ids_ranges_and_globs_select() {
        let s = PageSelector::parse(&["3", "10-12", "model.layers.1?.*"]).unwrap();
        assert!(s.matches(3, &PageMeta::default()));
        assert!(s.matches(11, &PageMeta::default()));
        assert!(!s.matches(13, &PageMeta::default()));
        assert!(s.matches(99, &named("model.layers.12.attn")));
        assert!(!s.matches(99, &named("model.layers.2.attn")));
        assert!(
            PageSelector::parse::<&str>(&[])
                .unwrap()
                .matches(5, &PageMeta::default())
        );
        assert!(PageSelector::parse(&["9-3"]).is_err());
    }
}
