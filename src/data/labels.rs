//! Label decoding: class-id rasters, code rasters (code -> id tables) and ISPRS colour-coded
//! RGB labels. Decoded labels are `i64` class ids with `ignore_index` where a pixel is left out.
//! Also the class tables (names and colours in id order) of the datasets that name their classes.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::raster::{Pixels, Window};

/// The ISPRS classes (Potsdam, Vaihingen) in id order, with their label colours.
pub(crate) const ISPRS_CLASSES: [(&str, [u8; 3]); 6] = [
    ("impervious surfaces", [255, 255, 255]),
    ("building", [0, 0, 255]),
    ("low vegetation", [0, 255, 255]),
    ("tree", [0, 255, 0]),
    ("car", [255, 255, 0]),
    ("clutter", [255, 0, 0]),
];

/// The classes of the synthetic benchmark (ids in `super::synth`) in id order, with their label
/// colours: the ISPRS colours, plus navy for water.
pub const SYNTHETIC_CLASSES: [(&str, [u8; 3]); 6] = [
    ("impervious surface", [255, 255, 255]),
    ("building", [0, 0, 255]),
    ("low vegetation", [0, 255, 255]),
    ("tree", [0, 255, 0]),
    ("car", [255, 255, 0]),
    ("water", [0, 0, 128]),
];

/// How the label rasters of a dataset encode classes.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelDecoder {
    /// One band of class ids; the declared nodata and the ignore index itself mean "ignore".
    Ids,
    /// One band of codes, each mapped to a class id; `ignore` codes and nodata mean "ignore".
    Codes {
        map: BTreeMap<i64, i64>,
        ignore: Vec<i64>,
        key: String,
    },
    /// Three bands of RGB: colour `i` is class `i`; `ignore` colours mean "ignore". A colour
    /// matches when every channel is within `tolerance`.
    Colours {
        colours: Vec<[u8; 3]>,
        ignore: Vec<[u8; 3]>,
        tolerance: u8,
    },
}

impl LabelDecoder {
    /// The ISPRS colour coding; eroded labels mark boundaries black, which is ignored.
    pub(crate) fn isprs(eroded: bool, tolerance: u8) -> Self {
        Self::Colours {
            colours: ISPRS_CLASSES.iter().map(|(_, c)| *c).collect(),
            ignore: if eroded { vec![[0, 0, 0]] } else { Vec::new() },
            tolerance,
        }
    }

    /// Bands a label raster must have.
    pub fn bands(&self) -> usize {
        match self {
            Self::Colours { .. } => 3,
            _ => 1,
        }
    }

    /// Decodes `px`, read from `window` of the label raster `path`. Pixels marked invalid (masks,
    /// nodata, outside the raster) become `ignore_index`.
    ///
    /// # Errors
    /// The wrong band count; label values that are not classes (ids out of `0..num_classes`,
    /// codes in neither table): an [`UnknownLabelValues`] listing every such value of the window
    /// with its pixel count; a colour of no class, named with its column and row in the file.
    pub(crate) fn decode(
        &self,
        px: &Pixels,
        path: &Path,
        window: Window,
        num_classes: i64,
        ignore_index: i64,
    ) -> Result<Vec<i64>> {
        if px.bands != self.bands() {
            bail!(
                "{}: label raster has {} band(s), expected {}",
                path.display(),
                px.bands,
                self.bands()
            );
        }
        let n = px.width * px.height;
        let mut out = vec![ignore_index; n];
        let mut unknown = BTreeMap::new();
        for (i, slot) in out.iter_mut().enumerate() {
            if !px.valid[i] {
                continue;
            }
            let value = match self {
                Self::Ids | Self::Codes { .. } => integer_value(px.data[i], path)?,
                Self::Colours { .. } => 0,
            };
            match self.meaning(px, i, value, num_classes, ignore_index) {
                Meaning::Class(id) => *slot = id,
                Meaning::Ignore => {}
                Meaning::Unknown => *unknown.entry(value).or_insert(0u64) += 1,
                Meaning::UnknownColour(rgb) => bail!(
                    "{}: unknown label colour ({}, {}, {}) at column {}, row {} of the file",
                    path.display(),
                    rgb[0],
                    rgb[1],
                    rgb[2],
                    window.x + (i % px.width) as i64,
                    window.y + (i / px.width) as i64
                ),
            }
        }
        if !unknown.is_empty() {
            return Err(UnknownLabelValues {
                path: path.to_path_buf(),
                counts: unknown,
                whole_file: false,
                hint: self.unknown_hint(num_classes, ignore_index),
            }
            .into());
        }
        Ok(out)
    }

    /// The values of the valid pixels of `px` that are not classes, with their pixel counts
    /// (ids and codes; colour labels report their first unknown colour through [`Self::decode`]).
    pub(crate) fn unknown_values(
        &self,
        px: &Pixels,
        path: &Path,
        num_classes: i64,
        ignore_index: i64,
    ) -> Result<BTreeMap<i64, u64>> {
        let mut unknown = BTreeMap::new();
        if matches!(self, Self::Colours { .. }) {
            return Ok(unknown);
        }
        for i in (0..px.width * px.height).filter(|&i| px.valid[i]) {
            let value = integer_value(px.data[i], path)?;
            if self.meaning(px, i, value, num_classes, ignore_index) == Meaning::Unknown {
                *unknown.entry(value).or_insert(0) += 1;
            }
        }
        Ok(unknown)
    }

    /// What pixel `i` of `px` (integer `value` for ids and codes) stands for.
    fn meaning(
        &self,
        px: &Pixels,
        i: usize,
        value: i64,
        num_classes: i64,
        ignore_index: i64,
    ) -> Meaning {
        let id = match self {
            Self::Ids => value,
            Self::Codes { map, ignore, .. } => {
                if ignore.contains(&value) {
                    return Meaning::Ignore;
                }
                match map.get(&value) {
                    Some(&id) => id,
                    None => return Meaning::Unknown,
                }
            }
            Self::Colours {
                colours,
                ignore,
                tolerance,
            } => {
                let n = px.width * px.height;
                let rgb = [0, 1, 2].map(|b| px.data[b * n + i].clamp(0.0, 255.0) as u8);
                let near = |c: &[u8; 3]| (0..3).all(|k| rgb[k].abs_diff(c[k]) <= *tolerance);
                if ignore.iter().any(near) {
                    return Meaning::Ignore;
                }
                match colours.iter().position(near) {
                    Some(class) => class as i64,
                    None => return Meaning::UnknownColour(rgb),
                }
            }
        };
        if id == ignore_index {
            Meaning::Ignore
        } else if (0..num_classes).contains(&id) {
            Meaning::Class(id)
        } else {
            Meaning::Unknown
        }
    }

    fn unknown_hint(&self, num_classes: i64, ignore_index: i64) -> String {
        match self {
            Self::Codes { key, .. } => {
                let ignore = key.replace("class_codes", "ignore_codes");
                format!(
                    "map each to a class id in {key}, or leave it out of training and scoring \
                     with {ignore}"
                )
            }
            _ => format!(
                "class ids are 0..={} (model.num_classes {num_classes}) and the ignore value \
                 {ignore_index}; map other values with class_codes and ignore_codes (generic \
                 layout), or declare them as the label rasters' nodata",
                num_classes - 1
            ),
        }
    }

    /// Checks the decoding tables for values with two meanings: a code both mapped and ignored,
    /// a code mapped to the ignore index or to no class, two colours (or a class colour and an
    /// ignore colour, such as eroded-label black) that one pixel could match within the
    /// tolerance. Errors name the key (`layout_key` is the layout's, e.g.
    /// `data.dataset.potsdam`), the value and both meanings.
    pub fn check(&self, num_classes: i64, ignore_index: i64, layout_key: &str) -> Result<()> {
        match self {
            Self::Ids => Ok(()),
            Self::Codes { map, ignore, key } => {
                let ignore_key = key.replace("class_codes", "ignore_codes");
                for (&code, &id) in map {
                    if ignore.contains(&code) {
                        bail!(
                            "{key}: code {code} maps to class id {id} and is also in \
                             {ignore_key}; keep it in one of them"
                        );
                    }
                    if id == ignore_index {
                        bail!(
                            "{key}: code {code} maps to {id}, the ignore index (data.ignore_index), \
                             not a class; list {code} in {ignore_key} instead"
                        );
                    }
                    if !(0..num_classes).contains(&id) {
                        bail!(
                            "{key}: code {code} maps to {id}, not a class id 0..={} \
                             (model.num_classes {num_classes})",
                            num_classes - 1
                        );
                    }
                }
                Ok(())
            }
            Self::Colours {
                colours,
                ignore,
                tolerance,
            } => {
                let named = colours
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("class id {i}"), *c))
                    .chain(ignore.iter().map(|c| ("ignored".to_string(), *c)));
                let all: Vec<(String, [u8; 3])> = named.collect();
                for (i, (what_a, a)) in all.iter().enumerate() {
                    for (what_b, b) in &all[i + 1..] {
                        let overlap =
                            (0..3).all(|k| a[k].abs_diff(b[k]) <= tolerance.saturating_mul(2));
                        if overlap && !(what_a == "ignored" && what_b == "ignored") {
                            bail!(
                                "{layout_key}.colour_tolerance {tolerance}: label colours {a:?} ({what_a}) and \
                                 {b:?} ({what_b}) are within 2 x {tolerance} of each other in every \
                                 channel, so one pixel could be either; lower the tolerance"
                            );
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// What band `band` (0-based) of a label raster declaring `nodata` there would lose: the
    /// class meaning of that value, if it has one (ignored values and non-classes lose nothing).
    pub(crate) fn class_of_nodata(
        &self,
        band: usize,
        nodata: f64,
        num_classes: i64,
        ignore_index: i64,
    ) -> Option<String> {
        if !nodata.is_finite() || nodata.fract() != 0.0 {
            return None;
        }
        let value = nodata as i64;
        match self {
            Self::Ids => ((0..num_classes).contains(&value) && value != ignore_index)
                .then(|| format!("class id {value}")),
            Self::Codes { map, ignore, key } => {
                let id = *map.get(&value)?;
                (!ignore.contains(&value)).then(|| format!("code {value} of {key} (class id {id})"))
            }
            Self::Colours { colours, .. } => {
                let i = colours
                    .iter()
                    .position(|c| f64::from(c[band.min(2)]) == nodata)?;
                let c = colours[i];
                Some(format!(
                    "part of class id {i}'s colour ({}, {}, {}), whose band {} is {value}",
                    c[0],
                    c[1],
                    c[2],
                    band + 1
                ))
            }
        }
    }
}

/// What a label pixel stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    Class(i64),
    Ignore,
    /// An id or code that is not a class.
    Unknown,
    UnknownColour([u8; 3]),
}

/// `v` as an integer label value; the error names the file.
fn integer_value(v: f32, path: &Path) -> Result<i64> {
    let value = v as i64;
    if value as f32 != v {
        bail!(
            "{}: label value {v} is not an integer class id or code",
            path.display()
        );
    }
    Ok(value)
}

/// Label values of a file (or of a window of it) that are not classes, with their pixel counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownLabelValues {
    pub path: PathBuf,
    /// Value -> pixels.
    pub counts: BTreeMap<i64, u64>,
    /// The counts cover the whole file (else one window of it).
    pub whole_file: bool,
    /// Where to map them.
    pub hint: String,
}

impl std::fmt::Display for UnknownLabelValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self
            .counts
            .iter()
            .map(|(v, n)| format!("{v} ({n} px)"))
            .collect();
        let scope = if self.whole_file {
            ""
        } else {
            " in the window read"
        };
        write!(
            f,
            "{}: {} label value(s) that are not classes{scope}: {}; {}",
            self.path.display(),
            self.counts.len(),
            list.join(", "),
            self.hint
        )
    }
}

impl std::error::Error for UnknownLabelValues {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(bands: usize, data: Vec<f32>, valid: Vec<bool>) -> Pixels {
        let width = valid.len();
        Pixels {
            bands,
            width,
            height: 1,
            data,
            valid,
        }
    }

    /// A window one row high at column 100, row 7 of its file.
    fn at(width: usize) -> Window {
        Window::new(100, 7, width, 1)
    }

    #[test]
    fn isprs_colours_decode_and_eroded_black_is_ignored() {
        let (r, g, b) = (
            vec![255., 0., 0., 0., 255., 255., 0.],
            vec![255., 0., 255., 255., 255., 0., 0.],
            vec![255., 255., 255., 0., 0., 0., 0.],
        );
        let px = pixels(3, [r, g, b].concat(), vec![true; 7]);
        let path = Path::new("lbl.tif");
        let eroded = LabelDecoder::isprs(true, 0)
            .decode(&px, path, at(7), 6, 255)
            .unwrap();
        assert_eq!(eroded, vec![0, 1, 2, 3, 4, 5, 255]);
        let err = LabelDecoder::isprs(false, 0)
            .decode(&px, path, at(7), 6, 255)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbl.tif")
                && err.contains("unknown label colour (0, 0, 0) at column 106, row 7 of the file"),
            "{err}"
        );
        let off = pixels(3, vec![250., 5., 0.], vec![true]);
        let err = LabelDecoder::isprs(false, 0)
            .decode(&off, path, at(1), 6, 255)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(250, 5, 0)"), "{err}");
        assert_eq!(
            LabelDecoder::isprs(false, 8)
                .decode(&off, path, at(1), 6, 255)
                .unwrap(),
            vec![5]
        );
    }

    #[test]
    fn ids_and_codes_list_every_value_that_is_not_a_class() {
        let path = Path::new("ids.tif");
        let px = pixels(1, vec![0., 3., 255., 7.], vec![true, true, true, false]);
        assert_eq!(
            LabelDecoder::Ids.decode(&px, path, at(4), 4, 255).unwrap(),
            vec![0, 3, 255, 255]
        );
        let px = pixels(1, vec![0., 3., 9., 3., 7.], vec![true; 5]);
        let err = LabelDecoder::Ids
            .decode(&px, path, at(5), 3, 255)
            .unwrap_err();
        let unknown = err.downcast_ref::<UnknownLabelValues>().unwrap();
        assert_eq!(unknown.counts, BTreeMap::from([(3, 2), (7, 1), (9, 1)]));
        let text = err.to_string();
        assert!(
            text.contains("ids.tif: 3 label value(s) that are not classes in the window read: 3 (2 px), 7 (1 px), 9 (1 px)")
                && text.contains("class ids are 0..=2"),
            "{text}"
        );
        let codes = LabelDecoder::Codes {
            map: BTreeMap::from([(10, 0), (20, 1)]),
            ignore: vec![0],
            key: "data.dataset.whu_opt_sar.class_codes".into(),
        };
        let px = pixels(1, vec![10., 20., 0.], vec![true; 3]);
        assert_eq!(
            codes.decode(&px, path, at(3), 2, 255).unwrap(),
            vec![0, 1, 255]
        );
        let px = pixels(1, vec![30., 10., 30., 40.], vec![true; 4]);
        let err = codes
            .decode(&px, path, at(4), 2, 255)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("30 (2 px), 40 (1 px)")
                && err.contains("data.dataset.whu_opt_sar.class_codes")
                && err.contains("data.dataset.whu_opt_sar.ignore_codes"),
            "{err}"
        );
        assert_eq!(
            codes.unknown_values(&px, path, 2, 255).unwrap(),
            BTreeMap::from([(30, 2), (40, 1)])
        );
    }

    #[test]
    fn values_with_two_meanings_are_refused() {
        let codes = |map: &[(i64, i64)], ignore: &[i64]| LabelDecoder::Codes {
            map: map.iter().copied().collect(),
            ignore: ignore.to_vec(),
            key: "data.dataset.generic.class_codes".into(),
        };
        codes(&[(1, 0), (2, 1)], &[0]).check(2, 255, "d").unwrap();
        let err = codes(&[(0, 0), (2, 1)], &[0])
            .check(2, 255, "d")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "code 0 maps to class id 0 and is also in data.dataset.generic.ignore_codes"
            ),
            "{err}"
        );
        let err = codes(&[(7, 255)], &[])
            .check(2, 255, "d")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("code 7 maps to 255, the ignore index"),
            "{err}"
        );
        let err = codes(&[(7, 5)], &[])
            .check(2, 255, "d")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("code 7 maps to 5, not a class id 0..=1"),
            "{err}"
        );
        LabelDecoder::isprs(true, 127)
            .check(6, 255, "data.dataset.potsdam")
            .unwrap();
        let err = LabelDecoder::isprs(true, 128)
            .check(6, 255, "data.dataset.potsdam")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.dataset.potsdam.colour_tolerance 128"),
            "{err}"
        );
        let err = LabelDecoder::isprs(true, 200)
            .check(6, 255, "data.dataset.potsdam")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour_tolerance 200"), "{err}");
        let black = LabelDecoder::Colours {
            colours: vec![[40, 40, 40]],
            ignore: vec![[0, 0, 0]],
            tolerance: 20,
        };
        let err = black.check(1, 255, "d").unwrap_err().to_string();
        assert!(err.contains("[0, 0, 0] (ignored)"), "{err}");
    }

    #[test]
    fn a_nodata_value_that_is_a_class_is_named() {
        assert_eq!(
            LabelDecoder::Ids.class_of_nodata(0, 0.0, 6, 255).as_deref(),
            Some("class id 0")
        );
        assert_eq!(LabelDecoder::Ids.class_of_nodata(0, 255.0, 6, 255), None);
        assert_eq!(LabelDecoder::Ids.class_of_nodata(0, -99.0, 6, 255), None);
        let codes = LabelDecoder::Codes {
            map: BTreeMap::from([(10, 0)]),
            ignore: vec![0],
            key: "k.class_codes".into(),
        };
        assert_eq!(codes.class_of_nodata(0, 0.0, 1, 255), None);
        assert!(codes
            .class_of_nodata(0, 10.0, 1, 255)
            .unwrap()
            .contains("code 10 of k.class_codes (class id 0)"));
        let colours = LabelDecoder::isprs(false, 0);
        let lost = colours.class_of_nodata(0, 0.0, 6, 255).unwrap();
        assert!(
            lost.contains("class id 1's colour (0, 0, 255), whose band 1 is 0"),
            "{lost}"
        );
        assert_eq!(colours.class_of_nodata(0, 7.0, 6, 255), None);
    }
}
