//! Label decoding: class-id rasters, code rasters (code -> id tables) and ISPRS colour-coded
//! RGB labels. Decoded labels are `i64` class ids with `ignore_index` where a pixel is left out.
//! Also the class tables (names and colours in id order) of the datasets that name their classes.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

use super::raster::Pixels;

/// The ISPRS classes (Potsdam, Vaihingen) in id order, with their label colours.
pub const ISPRS_CLASSES: [(&str, [u8; 3]); 6] = [
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
    pub fn isprs(eroded: bool, tolerance: u8) -> Self {
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

    /// Decodes a window of a label raster read from `path`. Pixels marked invalid (nodata,
    /// outside the raster) become `ignore_index`. Unknown codes or colours and class ids out of
    /// `0..num_classes` are errors that name the file and the value.
    pub fn decode(
        &self,
        px: &Pixels,
        path: &Path,
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
        for (i, slot) in out.iter_mut().enumerate() {
            if !px.valid[i] {
                continue;
            }
            let id = match self {
                Self::Ids => {
                    let v = px.data[i];
                    if v as i64 as f32 != v {
                        bail!(
                            "{}: label value {v} is not an integer class id",
                            path.display()
                        );
                    }
                    v as i64
                }
                Self::Codes { map, ignore, key } => {
                    let v = px.data[i];
                    let code = v as i64;
                    if code as f32 != v {
                        bail!("{}: label code {v} is not an integer", path.display());
                    }
                    if ignore.contains(&code) {
                        continue;
                    }
                    *map.get(&code).ok_or_else(|| {
                        let known: Vec<String> = map.keys().map(|k| k.to_string()).collect();
                        anyhow::anyhow!(
                            "{}: label code {code} is not in {key} (known codes: {})",
                            path.display(),
                            known.join(", ")
                        )
                    })?
                }
                Self::Colours {
                    colours,
                    ignore,
                    tolerance,
                } => {
                    let rgb = [0, 1, 2].map(|b| px.data[b * n + i].clamp(0.0, 255.0) as u8);
                    let near = |c: &[u8; 3]| (0..3).all(|k| rgb[k].abs_diff(c[k]) <= *tolerance);
                    if ignore.iter().any(near) {
                        continue;
                    }
                    match colours.iter().position(near) {
                        Some(class) => class as i64,
                        None => bail!(
                            "{}: unknown label colour ({}, {}, {}) at column {}, row {} of the window read",
                            path.display(),
                            rgb[0],
                            rgb[1],
                            rgb[2],
                            i % px.width,
                            i / px.width
                        ),
                    }
                }
            };
            if id == ignore_index {
                continue;
            }
            if !(0..num_classes).contains(&id) {
                bail!(
                    "{}: label value {id} is out of range: expected a class id 0..={} or the ignore value {ignore_index}",
                    path.display(),
                    num_classes - 1
                );
            }
            *slot = id;
        }
        Ok(out)
    }
}

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
            .decode(&px, path, 6, 255)
            .unwrap();
        assert_eq!(eroded, vec![0, 1, 2, 3, 4, 5, 255]);
        let err = LabelDecoder::isprs(false, 0)
            .decode(&px, path, 6, 255)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbl.tif") && err.contains("unknown label colour (0, 0, 0)"),
            "{err}"
        );
        let off = pixels(3, vec![250., 5., 0.], vec![true]);
        let err = LabelDecoder::isprs(false, 0)
            .decode(&off, path, 6, 255)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(250, 5, 0)"), "{err}");
        assert_eq!(
            LabelDecoder::isprs(false, 8)
                .decode(&off, path, 6, 255)
                .unwrap(),
            vec![5]
        );
    }

    #[test]
    fn ids_and_codes_check_their_range() {
        let path = Path::new("ids.tif");
        let px = pixels(1, vec![0., 3., 255., 7.], vec![true, true, true, false]);
        assert_eq!(
            LabelDecoder::Ids.decode(&px, path, 4, 255).unwrap(),
            vec![0, 3, 255, 255]
        );
        let err = LabelDecoder::Ids
            .decode(&px, path, 3, 255)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ids.tif") && err.contains("label value 3 is out of range"),
            "{err}"
        );
        let codes = LabelDecoder::Codes {
            map: BTreeMap::from([(10, 0), (20, 1)]),
            ignore: vec![0],
            key: "data.dataset.whu_opt_sar.class_codes".into(),
        };
        let px = pixels(1, vec![10., 20., 0.], vec![true; 3]);
        assert_eq!(codes.decode(&px, path, 2, 255).unwrap(), vec![0, 1, 255]);
        let px = pixels(1, vec![30.], vec![true]);
        let err = codes.decode(&px, path, 2, 255).unwrap_err().to_string();
        assert!(
            err.contains("label code 30 is not in data.dataset.whu_opt_sar.class_codes"),
            "{err}"
        );
    }
}
