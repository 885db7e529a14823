//! Gaps of the synthetic benchmark as real scenes have them (`dis2 synth --gaps`): SAR swath
//! edges, DSM voids, and clouds with their shadows drawn into the optical image, with the cloud
//! mask that says where.
//!
//! Drawn over a finished scene of [`super::synth`] from a random stream of their own, so the
//! scene under the gaps (and the benchmark without `--gaps`) is the same bytes as before. The
//! labels stay the class of the ground. Which scenes get which gap follows a low-discrepancy
//! sequence over scene indices, offset by the seed: every split, the 6 test scenes of the
//! default benchmark included, gets about its share of each kind.

use super::rng::{splitmix64, Rng};

/// Nodata value of the SAR rasters of the benchmark (swath edges, with or without gaps).
pub const SAR_NODATA: f32 = -99.0;
/// Nodata value of the DSM rasters written with `--gaps` (voids).
pub const DSM_NODATA: f32 = -9999.0;
/// Cloud mask value of a cloud pixel (any opacity).
pub const CLOUD: u8 = 1;
/// Cloud mask value of a pixel in a cloud's shadow and under no cloud.
pub const CLOUD_SHADOW: u8 = 2;

/// Share of scenes with a SAR swath (or slice) edge.
const SAR_EDGE_SHARE: f64 = 0.4;
/// Share of the pixels of an affected scene beyond the SAR edge.
const SAR_EDGE_FRACTION: (f64, f64) = (0.2, 0.7);
/// Share of scenes with DSM voids.
const DSM_VOID_SHARE: f64 = 0.5;
/// Share of the pixels of an affected scene that are DSM voids.
const DSM_VOID_FRACTION: (f64, f64) = (0.02, 0.06);
/// Share of scenes with clouds.
const CLOUD_SHARE: f64 = 0.4;
/// Share of the pixels of an affected scene under a cloud (shadows come on top).
const CLOUD_COVER: (f64, f64) = (0.10, 0.40);

/// Random stream of the gaps (`Rng::derive(seed, GAPS_STREAM, scene index)`).
const GAPS_STREAM: u64 = 0x6A95_C10D;
/// Random stream of the offsets of the sequences that choose the affected scenes (one draw per
/// seed, shared by all scenes).
const AFFECTED_STREAM: u64 = 0x6A95_5CE7;

/// What [`draw_gaps`] drew into a scene; the masks are row-major planes of `size * size`.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneGaps {
    /// Share of the scene beyond the SAR edge drawn here (0 without one); the base benchmark's
    /// corner cuts (nodata in about 1 scene of 5) come on top.
    pub sar_edge_fraction: f64,
    /// Share of the scene that is DSM void.
    pub dsm_void_fraction: f64,
    /// Share of the scene under a cloud ([`CLOUD`] in the mask).
    pub cloud_cover: f64,
    /// 0 clear, [`CLOUD`], [`CLOUD_SHADOW`]: what `OUT/{split}/clouds/scene_NNNN.tif` holds.
    pub cloud_mask: Vec<u8>,
    /// Cloud opacity in [0, 1] (0 where no cloud was drawn).
    pub cloud_opacity: Vec<f32>,
    /// Darkening of the cloud shadow in [0, 1] (0 where no shadow was drawn).
    pub shadow_opacity: Vec<f32>,
}

/// The planes of one scene that gaps are drawn into (row-major, `size * size` per band).
pub struct ScenePlanes<'a> {
    pub size: usize,
    /// R, G, B, NIR, band-major.
    pub optical: &'a mut [u8],
    /// Height above ground in metres.
    pub dsm: &'a mut [f32],
    /// Backscatter in dB.
    pub sar: &'a mut [f32],
    /// Where the ground is water (no DSM there more often).
    pub water: &'a [bool],
    /// Sun azimuth in radians, clockwise from north (the cloud shadows fall away from it).
    pub sun_azimuth: f64,
}

/// Draws the gaps of scene `index` under `seed` into `scene` (a pure function of its
/// arguments): SAR beyond a straight swath edge set to [`SAR_NODATA`], DSM voids set to
/// [`DSM_NODATA`], clouds and their shadows painted into the optical image (which keeps values
/// there, as an L2A product does). Through `SceneRasters::draw_gaps`, which also keeps the
/// cloud mask for the writer.
pub fn draw_gaps(mut scene: ScenePlanes<'_>, seed: u64, index: usize) -> SceneGaps {
    let scene = &mut scene;
    let n = scene.size;
    let mut rng = Rng::derive(seed, GAPS_STREAM, index as u64);
    let mut order = Rng::derive(seed, AFFECTED_STREAM, 0);
    let offsets: Vec<f64> = (0..3).map(|_| order.f64()).collect();
    let affected = |kind: usize, share: f64| {
        // Additive recurrences with distinct irrational steps: evenly spread, unlike each other.
        const STEPS: [f64; 3] = [0.618_033_988_7, 0.414_213_562_4, 0.754_877_666_2];
        (offsets[kind] + index as f64 * STEPS[kind]).fract() < share
    };
    let mut gaps = SceneGaps {
        sar_edge_fraction: 0.0,
        dsm_void_fraction: 0.0,
        cloud_cover: 0.0,
        cloud_mask: vec![0; n * n],
        cloud_opacity: vec![0.0; n * n],
        shadow_opacity: vec![0.0; n * n],
    };
    if affected(0, SAR_EDGE_SHARE) {
        let beyond = swath_edge(&mut rng, n);
        for (v, _) in scene.sar.iter_mut().zip(&beyond).filter(|(_, b)| **b) {
            *v = SAR_NODATA;
        }
        gaps.sar_edge_fraction = share(&beyond);
    }
    if affected(1, DSM_VOID_SHARE) {
        let voids = dsm_voids(&mut rng, scene);
        for (v, _) in scene.dsm.iter_mut().zip(&voids).filter(|(_, b)| **b) {
            *v = DSM_NODATA;
        }
        gaps.dsm_void_fraction = share(&voids);
    }
    if affected(2, CLOUD_SHARE) {
        draw_clouds(&mut rng, scene, &mut gaps);
    }
    gaps
}

fn share(mask: &[bool]) -> f64 {
    mask.iter().filter(|&&b| b).count() as f64 / mask.len().max(1) as f64
}

/// The value below which a share `1 - top` of `values` lies: the pixels above it are the top
/// `top` of them (ties aside).
fn threshold_for_top(values: &[f64], top: f64) -> f64 {
    let mut sorted = values.to_vec();
    let k = ((1.0 - top) * sorted.len() as f64).round() as usize;
    let k = k.min(sorted.len() - 1);
    let (_, at, _) = sorted.select_nth_unstable_by(k, f64::total_cmp);
    *at
}

/// The pixels beyond a straight SAR edge: a swath side (the orbit runs within 5-20 degrees of
/// north-south, so the edge does too) in 7 scenes of 10, else the start or end of a product
/// slice (across the track); a share drawn from [`SAR_EDGE_FRACTION`] is beyond it.
fn swath_edge(rng: &mut Rng, n: usize) -> Vec<bool> {
    let fraction = rng.range_f64(SAR_EDGE_FRACTION.0, SAR_EDGE_FRACTION.1);
    let tilt = rng.range_f64(5.0, 20.0).to_radians() * if rng.chance(0.5) { 1.0 } else { -1.0 };
    let across_track = if rng.chance(0.7) {
        0.0
    } else {
        std::f64::consts::FRAC_PI_2
    };
    let side = if rng.chance(0.5) {
        0.0
    } else {
        std::f64::consts::PI
    };
    // The edge's normal, pointing into the nodata side.
    let angle = across_track + tilt + side;
    let (c, s) = (angle.cos(), angle.sin());
    let along: Vec<f64> = (0..n * n)
        .map(|i| (i % n) as f64 * c + (i / n) as f64 * s)
        .collect();
    let t = threshold_for_top(&along, fraction);
    along.iter().map(|&v| v > t).collect()
}

/// DSM voids as stereo matching and LiDAR leave them: blobs of a smooth noise field, more
/// likely over water (no texture to match, no return) and at the foot of walls and trees
/// (occlusion), covering a share drawn from [`DSM_VOID_FRACTION`].
fn dsm_voids(rng: &mut Rng, scene: &ScenePlanes) -> Vec<bool> {
    let n = scene.size;
    let fraction = rng.range_f64(DSM_VOID_FRACTION.0, DSM_VOID_FRACTION.1);
    let key = rng.next_u64();
    let cell = rng.range_f64(6.0, 14.0);
    let score: Vec<f64> = (0..n * n)
        .map(|i| {
            let (x, y) = (i % n, i / n);
            let water = if scene.water[i] { 0.15 } else { 0.0 };
            let occluded = if below_a_step(scene.dsm, n, x, y, 3.0) {
                0.1
            } else {
                0.0
            };
            fbm(key, x as f64, y as f64, cell, 3) + water + occluded
        })
        .collect();
    let t = threshold_for_top(&score, fraction);
    score.iter().map(|&v| v > t).collect()
}

/// Whether a pixel within 2 px of (x, y) stands `step` metres higher than it (a wall's or a
/// crown's foot, where the other view or the laser does not see the ground).
fn below_a_step(height: &[f32], n: usize, x: usize, y: usize, step: f32) -> bool {
    let h = height[y * n + x];
    let (x0, x1) = (x.saturating_sub(2), (x + 2).min(n - 1));
    let (y0, y1) = (y.saturating_sub(2), (y + 2).min(n - 1));
    (y0..=y1).any(|qy| (x0..=x1).any(|qx| height[qy * n + qx] - h > step))
}

/// Clouds over a share of the scene drawn from [`CLOUD_COVER`]: a fractal noise field
/// thresholded at that share, with soft, semi-transparent (cirrus-like) edges, brightness
/// textured by finer noise; and their shadows, the same shapes moved away from the sun of the
/// scene's building shadows and darkening the ground. The offset is scaled to the scene (128 m
/// across by default), where a real cloud's shadow lands up to kilometres away.
fn draw_clouds(rng: &mut Rng, scene: &mut ScenePlanes, gaps: &mut SceneGaps) {
    let n = scene.size;
    let cover = rng.range_f64(CLOUD_COVER.0, CLOUD_COVER.1);
    let (shape, texture) = (rng.next_u64(), rng.next_u64());
    let cell = rng.range_f64(0.3, 0.5) * n as f64;
    let softness = rng.range_f64(0.04, 0.1);
    let distance = rng.range_f64(0.06, 0.15) * n as f64;
    let darkening = rng.range_f64(0.45, 0.6) as f32;
    let toward_sun = (scene.sun_azimuth.sin(), -scene.sun_azimuth.cos());
    let field = |x: f64, y: f64| fbm(shape, x, y, cell, 5);
    let values: Vec<f64> = (0..n * n)
        .map(|i| field((i % n) as f64, (i / n) as f64))
        .collect();
    let t = threshold_for_top(&values, cover);
    let opacity = |v: f64| {
        let r = ((v - t) / softness).clamp(0.0, 1.0);
        if v > t {
            (r * r * (3.0 - 2.0 * r)).max(0.02) as f32
        } else {
            0.0
        }
    };
    let npx = n * n;
    for (i, &v) in values.iter().enumerate() {
        let (x, y) = ((i % n) as f64, (i / n) as f64);
        let a = opacity(v);
        // The shadow at a pixel is cast by the cloud towards the sun from it.
        let s = opacity(field(
            x + toward_sun.0 * distance,
            y + toward_sun.1 * distance,
        ));
        let bright = 215.0 + 40.0 * fbm(texture, x, y, 6.0, 3) as f32;
        let cloud = [bright, bright, bright + 4.0, bright - 12.0];
        for (b, &top) in cloud.iter().enumerate() {
            let ground = f32::from(scene.optical[b * npx + i]) * (1.0 - darkening * s);
            let v = (1.0 - a) * ground + a * top;
            scene.optical[b * npx + i] = v.round().clamp(0.0, 255.0) as u8;
        }
        gaps.cloud_opacity[i] = a;
        gaps.shadow_opacity[i] = s * darkening;
        gaps.cloud_mask[i] = if a > 0.0 {
            CLOUD
        } else if s > 0.0 {
            CLOUD_SHADOW
        } else {
            0
        };
    }
    gaps.cloud_cover = gaps.cloud_mask.iter().filter(|&&m| m == CLOUD).count() as f64 / npx as f64;
}

/// Fractal value noise in [0, 1] at (x, y) (pixels): `octaves` layers of smooth noise of cells
/// `cell`, `cell / 2`, ... with halving weights, defined everywhere (outside the scene too).
fn fbm(key: u64, x: f64, y: f64, cell: f64, octaves: u32) -> f64 {
    let (mut sum, mut weight, mut amp, mut size) = (0.0, 0.0, 1.0, cell);
    for o in 0..octaves {
        sum += amp * value_noise(key.wrapping_add(u64::from(o)), x / size, y / size);
        weight += amp;
        amp *= 0.5;
        size = (size * 0.5).max(1.0);
    }
    sum / weight
}

/// Smooth noise in [0, 1]: random values on the integer lattice, blended with smoothstep.
fn value_noise(key: u64, x: f64, y: f64) -> f64 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    let (tx, ty) = (smooth(x - fx), smooth(y - fy));
    let at = |dx: i64, dy: i64| lattice(key, ix + dx, iy + dy);
    let top = at(0, 0) + (at(1, 0) - at(0, 0)) * tx;
    let bottom = at(0, 1) + (at(1, 1) - at(0, 1)) * tx;
    top + (bottom - top) * ty
}

fn lattice(key: u64, ix: i64, iy: i64) -> f64 {
    let mut state = key
        ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (iy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (splitmix64(&mut state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Pixels per missing-modality pattern, over some scenes: index = the set of missing
/// modalities as bits in model order (optical 1, DSM 2, SAR 4); optical is missing where the
/// cloud mask is nonzero, DSM and SAR where they are nodata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternCounts {
    pub pixels: [u64; 8],
    pub scenes: u64,
}

impl PatternCounts {
    /// Adds the pixels of one scene: its cloud mask (none without gaps), DSM and SAR planes.
    pub fn add(&mut self, cloud_mask: Option<&[u8]>, dsm: &[f32], sar: &[f32]) {
        for i in 0..dsm.len() {
            let optical = cloud_mask.is_some_and(|m| m[i] != 0);
            let dsm = dsm[i] == DSM_NODATA;
            let sar = sar[i] == SAR_NODATA;
            self.pixels[usize::from(optical) | usize::from(dsm) << 1 | usize::from(sar) << 2] += 1;
        }
        self.scenes += 1;
    }

    pub fn merge(&mut self, other: &PatternCounts) {
        for (a, b) in self.pixels.iter_mut().zip(other.pixels) {
            *a += b;
        }
        self.scenes += other.scenes;
    }

    /// The pattern of index `bits` as text: `none`, or the missing modalities joined by `+`
    /// in model order (`optical+sar`), as scenarios are written.
    pub fn pattern_name(bits: usize) -> String {
        let names: Vec<&str> = ["optical", "dsm", "sar"]
            .iter()
            .enumerate()
            .filter(|(k, _)| bits >> k & 1 == 1)
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join("+")
        }
    }

    /// One line per pattern: `missing optical+sar: 1234 px (1.23 %)`.
    pub fn lines(&self) -> Vec<String> {
        let total = self.pixels.iter().sum::<u64>().max(1);
        (0..8)
            .map(|bits| {
                format!(
                    "missing {:<16} {:>9} px ({:5.2} %)",
                    format!("{}:", Self::pattern_name(bits)),
                    self.pixels[bits],
                    100.0 * self.pixels[bits] as f64 / total as f64
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::{read_window_at, RasterInfo, Window};
    use crate::data::synth::{self, generate_scene, SceneRasters, SynthOptions};
    use std::path::Path;

    fn draw_gaps(scene: &mut SceneRasters, seed: u64, index: usize) -> SceneGaps {
        scene.draw_gaps(seed, index)
    }

    /// FNV-1a over bytes: a fingerprint of generated rasters.
    fn fnv(hash: &mut u64, bytes: &[u8]) {
        for &b in bytes {
            *hash = (*hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn fingerprint(seed: u64, scenes: usize, size: usize) -> u64 {
        let mut h = 0xCBF2_9CE4_8422_2325;
        for i in 0..scenes {
            let s = generate_scene(seed, i, size);
            fnv(&mut h, &s.optical);
            fnv(&mut h, &s.label);
            for v in s.dsm.iter().chain(&s.sar) {
                fnv(&mut h, &v.to_le_bytes());
            }
        }
        h
    }

    #[test]
    fn the_benchmark_without_gaps_is_the_one_written_before_gaps_existed() {
        // Measured on the generator before `--gaps` existed (the files of `dis2 synth` with the
        // defaults had the same SHA-256 before and after); a change here changes every
        // committed normalisation and result on the synthetic benchmark.
        assert_eq!(fingerprint(42, 6, 64), 0xCAEE_F5A5_662B_8637);
        let dir = tempfile::tempdir().unwrap();
        let options = SynthOptions {
            out: dir.path().to_path_buf(),
            scenes: 3,
            size: 32,
            seed: 42,
            gaps: false,
        };
        let written = synth::generate(&options).unwrap();
        assert_eq!(written.len(), 12, "no cloud masks without --gaps");
        assert!(!dir.path().join("train/clouds").exists());
        let dsm = RasterInfo::read(&dir.path().join("train/dsm/scene_0000.tif")).unwrap();
        assert_eq!(
            dsm.nodata[0], None,
            "the DSM declares no nodata without --gaps"
        );
    }

    fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    fn gaps_into(dir: &Path, seed: u64) -> Vec<std::path::PathBuf> {
        synth::generate(&SynthOptions {
            out: dir.to_path_buf(),
            scenes: 5,
            size: 64,
            seed,
            gaps: true,
        })
        .unwrap()
    }

    #[test]
    fn gaps_same_seed_same_bytes_and_a_mask_for_every_scene() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let written = gaps_into(a.path(), 5);
        gaps_into(b.path(), 5);
        gaps_into(c.path(), 6);
        assert_eq!(written.len(), 5 * 5);
        let clouds = written
            .iter()
            .filter(|p| p.parent().unwrap().ends_with("clouds"));
        assert_eq!(clouds.count(), 5, "one mask per scene, clouds or not");
        let files = files_under(a.path());
        assert_eq!(files.len(), 25);
        let mut differs = 0;
        for f in &files {
            let rel = f.strip_prefix(a.path()).unwrap();
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(
                bytes,
                std::fs::read(b.path().join(rel)).unwrap(),
                "{}",
                rel.display()
            );
            differs += usize::from(bytes != std::fs::read(c.path().join(rel)).unwrap());
        }
        assert!(
            differs >= 20,
            "another seed gives other scenes ({differs} of 25 differ)"
        );
        // Written again without gaps into the same folder: the masks go with the gaps.
        synth::generate(&SynthOptions {
            out: a.path().to_path_buf(),
            scenes: 5,
            size: 64,
            seed: 5,
            gaps: false,
        })
        .unwrap();
        assert_eq!(files_under(a.path()).len(), 20);
    }

    #[test]
    fn gap_fractions_and_shares_of_scenes_are_within_the_stated_ranges() {
        let scenes = 40;
        let (mut sar, mut dsm, mut cloud, mut overlap) = (0, 0, 0, 0);
        for i in 0..scenes {
            let clean = generate_scene(42, i, 64);
            let mut s = clean.clone();
            let g = draw_gaps(&mut s, 42, i);
            assert_eq!(s.label, clean.label, "labels stay the ground truth");
            if g.sar_edge_fraction > 0.0 {
                sar += 1;
                assert!((0.19..=0.71).contains(&g.sar_edge_fraction), "{g:?}");
                let nodata = s.sar.iter().filter(|&&v| v == SAR_NODATA).count();
                assert!(nodata as f64 >= g.sar_edge_fraction * 4096.0 - 0.5);
            } else {
                assert_eq!(s.sar, clean.sar);
            }
            if g.dsm_void_fraction > 0.0 {
                dsm += 1;
                assert!((0.019..=0.061).contains(&g.dsm_void_fraction), "{g:?}");
            } else {
                assert_eq!(s.dsm, clean.dsm);
            }
            let voids = s.dsm.iter().filter(|&&v| v == DSM_NODATA).count();
            assert_eq!(voids as f64, (g.dsm_void_fraction * 4096.0).round());
            if g.cloud_cover > 0.0 {
                cloud += 1;
                assert!((0.099..=0.401).contains(&g.cloud_cover), "{g:?}");
                overlap += usize::from(g.sar_edge_fraction > 0.0);
            } else {
                assert_eq!(s.optical, clean.optical);
                assert!(g.cloud_mask.iter().all(|&m| m == 0));
            }
        }
        let share = |k: usize| k as f64 / scenes as f64;
        assert!(
            (0.3..=0.5).contains(&share(sar)),
            "SAR edges in {sar} of {scenes}"
        );
        assert!(
            (0.4..=0.6).contains(&share(dsm)),
            "DSM voids in {dsm} of {scenes}"
        );
        assert!(
            (0.3..=0.5).contains(&share(cloud)),
            "clouds in {cloud} of {scenes}"
        );
        assert!(overlap > 0, "clouds over a scene with a SAR edge");
    }

    #[test]
    fn the_mask_is_nonzero_exactly_where_clouds_and_shadows_were_drawn() {
        let mut seen = 0;
        for i in 0..12 {
            let clean = generate_scene(3, i, 96);
            let mut s = clean.clone();
            let g = draw_gaps(&mut s, 3, i);
            if g.cloud_cover == 0.0 {
                continue;
            }
            seen += 1;
            let npx = 96 * 96;
            let (mut cloud_lift, mut clouds, mut shadow_drop, mut shadows) = (0.0, 0, 0.0, 0);
            for p in 0..npx {
                let (a, sh) = (g.cloud_opacity[p], g.shadow_opacity[p]);
                let expected = if a > 0.0 {
                    CLOUD
                } else if sh > 0.0 {
                    CLOUD_SHADOW
                } else {
                    0
                };
                assert_eq!(g.cloud_mask[p], expected, "pixel {p}");
                let brightness = |o: &[u8]| (0..3).map(|b| f64::from(o[b * npx + p])).sum::<f64>();
                let change = brightness(&s.optical) - brightness(&clean.optical);
                match expected {
                    0 => {
                        assert!((0..4).all(|b| s.optical[b * npx + p] == clean.optical[b * npx + p]))
                    }
                    CLOUD if a >= 0.5 => {
                        cloud_lift += change;
                        clouds += 1;
                    }
                    CLOUD_SHADOW if sh >= 0.3 => {
                        shadow_drop -= change;
                        shadows += 1;
                        assert!(change <= 0.0, "a shadow darkens");
                    }
                    _ => {}
                }
            }
            assert_eq!(s.cloud_mask.as_deref(), Some(&g.cloud_mask[..]));
            assert!(
                clouds > 0 && cloud_lift / clouds as f64 > 150.0,
                "clouds are bright"
            );
            if shadows > 0 {
                assert!(shadow_drop / shadows as f64 > 20.0, "shadows are dark");
            }
        }
        assert!(seen >= 2, "{seen} cloudy scenes");
    }

    #[test]
    fn gap_files_declare_their_nodata_and_the_mask_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        gaps_into(dir.path(), 7);
        let dsm = RasterInfo::read(&dir.path().join("train/dsm/scene_0000.tif")).unwrap();
        assert_eq!(dsm.nodata[0], Some(f64::from(DSM_NODATA)));
        let sar = RasterInfo::read(&dir.path().join("train/sar/scene_0000.tif")).unwrap();
        assert_eq!(sar.nodata[0], Some(f64::from(SAR_NODATA)));
        let mut voids_seen = false;
        for i in 0..5 {
            let split = synth::split_of(i, 5).as_str();
            let path = |m: &str| dir.path().join(format!("{split}/{m}/scene_{i:04}.tif"));
            let info = RasterInfo::read(&path("clouds")).unwrap();
            assert_eq!((info.bands, info.data_type.as_str()), (1, "Byte"));
            let label = RasterInfo::read(&path("label")).unwrap();
            assert_eq!(info.geo_transform, label.geo_transform);
            let mut scene = generate_scene(7, i, 64);
            let g = draw_gaps(&mut scene, 7, i);
            let whole = Window::new(0, 0, 64, 64);
            let mask = read_window_at(&path("clouds"), whole).unwrap();
            let read: Vec<u8> = mask.data.iter().map(|&v| v as u8).collect();
            assert_eq!(read, g.cloud_mask);
            let dsm = read_window_at(&path("dsm"), whole).unwrap();
            for (valid, v) in dsm.valid.iter().zip(&scene.dsm) {
                assert_eq!(*valid, *v != DSM_NODATA, "voids are nodata to GDAL");
            }
            voids_seen |= dsm.valid.iter().any(|v| !v);
        }
        assert!(voids_seen);
    }

    #[test]
    fn pattern_counts_name_the_missing_modalities() {
        let mut s = generate_scene(1, 0, 32);
        s.sar.fill(-10.0);
        s.cloud_mask = Some(vec![0; 1024]);
        s.cloud_mask.as_mut().unwrap()[0] = CLOUD;
        s.sar[0] = SAR_NODATA;
        s.sar[1] = SAR_NODATA;
        s.dsm[2] = DSM_NODATA;
        let mut counts = PatternCounts::default();
        counts.add(s.cloud_mask.as_deref(), &s.dsm, &s.sar);
        assert_eq!(counts.pixels[0b101], 1, "optical+sar");
        assert_eq!(counts.pixels[0b100], 1, "sar only");
        assert_eq!(counts.pixels[0b010], 1, "dsm");
        assert_eq!(counts.pixels.iter().sum::<u64>(), 1024);
        assert_eq!(PatternCounts::pattern_name(0b101), "optical+sar");
        assert_eq!(PatternCounts::pattern_name(0), "none");
        assert!(
            counts.lines()[5].starts_with("missing optical+sar:"),
            "{:?}",
            counts.lines()
        );
    }
}
