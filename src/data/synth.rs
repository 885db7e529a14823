//! The synthetic multimodal benchmark: georeferenced GeoTIFF scenes of a small town with optical
//! (R, G, B, NIR), a normalised DSM and SAR backscatter whose cues complement each other as real
//! sensors do, plus class labels.
//!
//! Design (what each modality can and cannot tell):
//! - roofs and roads are drawn from the same grey distribution in optical; only height (DSM) and
//!   the bright double bounce and brighter return of buildings in SAR tell them apart; roofs cast
//!   shadows in optical, a weak contextual cue;
//! - trees and low vegetation share the same green and NIR; height and SAR volume scattering tell
//!   them apart;
//! - water and shadowed impervious surfaces are both dark in optical; water is very dark and
//!   smooth in SAR;
//! - cars are small and coloured in optical, slightly raised in the DSM and bright in SAR.
//!
//! Layout: `OUT/{train,val,test}/{optical,dsm,sar,label}/scene_NNNN.tif` and
//! `OUT/experiment.yaml`; with [`SynthOptions::gaps`] also `OUT/{split}/clouds/scene_NNNN.tif`
//! (the gaps: [`super::synth_gaps`]). Everything is a function of the seed, so the same seed
//! gives the same bytes; scenes are generated in parallel.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

use super::layouts::Split;
use super::raster::{write_geotiff, GeoRef, RasterData, WriteOptions};
use super::rng::Rng;
use super::synth_gaps::{self, PatternCounts, SceneGaps, ScenePlanes, DSM_NODATA};

/// Class ids of the synthetic benchmark (names and colours: [`CLASSES`]).
pub(crate) const IMPERVIOUS: u8 = 0;
pub(crate) const BUILDING: u8 = 1;
pub(crate) const LOW_VEGETATION: u8 = 2;
pub(crate) const TREE: u8 = 3;
pub(crate) const CAR: u8 = 4;
pub(crate) const WATER: u8 = 5;

/// Class names and label colours in id order, kept with the other class tables in `labels`.
pub use super::labels::SYNTHETIC_CLASSES as CLASSES;

/// Ground sampling distance in metres.
pub const PIXEL_SIZE: f64 = 0.5;
/// UTM zone 32N (WGS 84).
pub const EPSG: u32 = 32632;
/// Nodata value of the SAR rasters (swath edges).
pub use super::synth_gaps::SAR_NODATA;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub scenes: usize,
    /// Side of a square scene in pixels.
    pub size: usize,
    pub seed: u64,
    /// Draw real-looking gaps over the scenes ([`SceneRasters::draw_gaps`]: SAR swath edges, DSM
    /// voids, clouds and shadows with their masks); `false` writes the benchmark as before.
    pub gaps: bool,
}

/// The rasters of one generated scene (row-major planes of `size * size`).
#[derive(Debug, Clone, PartialEq)]
pub struct SceneRasters {
    pub size: usize,
    /// R, G, B, NIR, band-major.
    pub optical: Vec<u8>,
    /// Height above ground in metres.
    pub dsm: Vec<f32>,
    /// Backscatter in dB; [`SAR_NODATA`] outside the swath.
    pub sar: Vec<f32>,
    pub label: Vec<u8>,
    /// Optical shadow mask (for tests and inspection; not written).
    pub shadow: Vec<bool>,
    /// Sun azimuth in radians, clockwise from north (the building shadows' and clouds').
    pub sun_azimuth: f64,
    /// With gaps ([`SceneRasters::draw_gaps`]): the cloud mask (0 clear, 1 cloud, 2 shadow),
    /// written to `clouds/`, and the DSM written with its nodata [`DSM_NODATA`] declared.
    pub cloud_mask: Option<Vec<u8>>,
    pub georef: GeoRef,
}

impl SceneRasters {
    /// Draws the gaps of scene `index` under `seed` into these rasters
    /// ([`synth_gaps::draw_gaps`]) and keeps the cloud mask, so that [`write_scene`] writes it
    /// and declares the DSM's nodata.
    pub fn draw_gaps(&mut self, seed: u64, index: usize) -> SceneGaps {
        let water: Vec<bool> = self.label.iter().map(|&c| c == WATER).collect();
        let planes = ScenePlanes {
            size: self.size,
            optical: &mut self.optical,
            dsm: &mut self.dsm,
            sar: &mut self.sar,
            water: &water,
            sun_azimuth: self.sun_azimuth,
        };
        let gaps = synth_gaps::draw_gaps(planes, seed, index);
        self.cloud_mask = Some(gaps.cloud_mask.clone());
        gaps
    }
}

/// The split of scene `index` of `count`: about 70 % train, 15 % val, 15 % test (each >= 1).
pub(crate) fn split_of(index: usize, count: usize) -> Split {
    let held = ((count as f64 * 0.15).round() as usize).max(1);
    if index >= count - held {
        Split::Test
    } else if index >= count - 2 * held {
        Split::Val
    } else {
        Split::Train
    }
}

/// Writes the benchmark (scenes in parallel). Returns the scene files written.
///
/// Errors: fewer than 3 scenes, a size outside 32..=8192 (naming the flag), or a file that
/// cannot be written or removed.
pub fn generate(options: &SynthOptions) -> Result<Vec<PathBuf>> {
    Ok(generate_counted(options)?.0)
}

/// [`generate`], also returning the pixels of the test split per missing-modality pattern.
pub(crate) fn generate_counted(options: &SynthOptions) -> Result<(Vec<PathBuf>, PatternCounts)> {
    if options.scenes < 3 {
        bail!(
            "--scenes: need at least 3 (train, val and test), got {}",
            options.scenes
        );
    }
    if !(32..=8192).contains(&options.size) {
        bail!(
            "--size: must be between 32 and 8192 pixels, got {}",
            options.size
        );
    }
    let written: Vec<(Vec<PathBuf>, PatternCounts)> = (0..options.scenes)
        .into_par_iter()
        .map(|i| {
            let mut scene = generate_scene(options.seed, i, options.size);
            if options.gaps {
                scene.draw_gaps(options.seed, i);
            }
            let split = split_of(i, options.scenes);
            let mut counts = PatternCounts::default();
            if split == Split::Test {
                counts.add(scene.cloud_mask.as_deref(), &scene.dsm, &scene.sar);
            }
            let dir = options.out.join(split.as_str());
            Ok((write_scene(&dir, &format!("scene_{i:04}"), &scene)?, counts))
        })
        .collect::<Result<_>>()?;
    let mut test = PatternCounts::default();
    for (_, counts) in &written {
        test.merge(counts);
    }
    let written: Vec<PathBuf> = written.into_iter().flat_map(|(files, _)| files).collect();
    remove_stale_scenes(&options.out, &written)?;
    Ok((written, test))
}

/// Removes `scene_NNNN.tif` files of an earlier run (more scenes, another split) from the
/// benchmark's own folders, so that the folder holds exactly this run. Nothing else is touched.
fn remove_stale_scenes(out: &Path, written: &[PathBuf]) -> Result<()> {
    for split in Split::ALL {
        for modality in ["optical", "dsm", "sar", "label", "clouds"] {
            let dir = out.join(split.as_str()).join(modality);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry
                    .with_context(|| format!("cannot list {}", dir.display()))?
                    .path();
                if is_scene_file(&path) && !written.contains(&path) {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("cannot remove stale scene {}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// `scene_` followed by digits and `.tif`: the names `dis2 synth` writes.
fn is_scene_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("scene_")
        .and_then(|rest| rest.strip_suffix(".tif"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes the four rasters of a scene under `dir/{optical,dsm,sar,label}/STEM.tif`, and with a
/// cloud mask ([`SceneRasters::cloud_mask`]) `dir/clouds/STEM.tif` (u8, 0 clear, 1 cloud,
/// 2 shadow) and the DSM's nodata [`DSM_NODATA`].
///
/// Errors: a file that cannot be written (naming it).
pub fn write_scene(dir: &Path, stem: &str, s: &SceneRasters) -> Result<Vec<PathBuf>> {
    let n = s.size;
    let file = |m: &str| dir.join(m).join(format!("{stem}.tif"));
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let mut paths = vec![file("optical"), file("dsm"), file("sar"), file("label")];
    write_geotiff(
        &paths[0],
        &RasterData {
            width: n,
            height: n,
            bands: 4,
            data: &s.optical,
        },
        &s.georef,
        &WriteOptions {
            band_names: names(&["red", "green", "blue", "nir"]),
            ..Default::default()
        },
    )?;
    write_geotiff(
        &paths[1],
        &RasterData {
            width: n,
            height: n,
            bands: 1,
            data: &s.dsm,
        },
        &s.georef,
        &WriteOptions {
            nodata: s.cloud_mask.as_ref().map(|_| f64::from(DSM_NODATA)),
            band_names: names(&["height above ground (m)"]),
            ..Default::default()
        },
    )?;
    write_geotiff(
        &paths[2],
        &RasterData {
            width: n,
            height: n,
            bands: 1,
            data: &s.sar,
        },
        &s.georef,
        &WriteOptions {
            nodata: Some(f64::from(SAR_NODATA)),
            band_names: names(&["sigma0 VV (dB)"]),
            ..Default::default()
        },
    )?;
    write_geotiff(
        &paths[3],
        &RasterData {
            width: n,
            height: n,
            bands: 1,
            data: &s.label,
        },
        &s.georef,
        &WriteOptions {
            nodata: Some(255.0),
            colour_table: Some(CLASSES.iter().map(|(_, c)| *c).collect()),
            band_names: names(&["class"]),
        },
    )?;
    if let Some(mask) = &s.cloud_mask {
        paths.push(file("clouds"));
        write_geotiff(
            &paths[4],
            &RasterData {
                width: n,
                height: n,
                bands: 1,
                data: mask,
            },
            &s.georef,
            &WriteOptions {
                band_names: names(&["cloud mask (0 clear, 1 cloud, 2 shadow)"]),
                ..Default::default()
            },
        )?;
    }
    Ok(paths)
}

/// Generates scene `index` under `seed` (pure function of its arguments).
pub fn generate_scene(seed: u64, index: usize, size: usize) -> SceneRasters {
    let mut g = Gen::new(seed, index, size);
    g.water();
    g.roads();
    g.blocks();
    g.street_trees();
    g.road_cars();
    g.finish()
}

/// Per-pixel state while a scene is drawn.
struct Gen {
    rng: Rng,
    n: usize,
    index: usize,
    density: f64,
    class: Vec<u8>,
    height: Vec<f32>,
    /// Base reflectance R, G, B, NIR before shadows and noise.
    colour: Vec<[f32; 4]>,
    /// SAR offset in dB added to the class's backscatter (per object).
    sar_offset: Vec<f32>,
    /// Road rows/columns (for cars and street trees): (start, width, horizontal).
    roads: Vec<(usize, usize, bool)>,
}

const GRASS: [f32; 4] = [78.0, 112.0, 62.0, 170.0];
const WATER_COLOUR: [f32; 4] = [38.0, 45.0, 52.0, 30.0];
const CAR_COLOURS: [[f32; 4]; 6] = [
    [190.0, 30.0, 30.0, 120.0],
    [30.0, 50.0, 170.0, 90.0],
    [235.0, 235.0, 235.0, 220.0],
    [25.0, 25.0, 28.0, 30.0],
    [165.0, 168.0, 172.0, 160.0],
    [220.0, 190.0, 40.0, 180.0],
];

impl Gen {
    fn new(seed: u64, index: usize, n: usize) -> Self {
        let mut rng = Rng::derive(seed, 0x5EED_5C3E, index as u64);
        let density = rng.range_f64(0.15, 0.95);
        let mut colour = vec![GRASS; n * n];
        // Grass varies in patches of about 16 px.
        let patch = 16;
        let cells = n.div_ceil(patch) + 1;
        let tints: Vec<f32> = (0..cells * cells)
            .map(|_| rng.normal() as f32 * 6.0)
            .collect();
        for (i, c) in colour.iter_mut().enumerate() {
            let t = tints[(i / n / patch) * cells + (i % n) / patch];
            *c = [c[0] + t * 0.6, c[1] + t, c[2] + t * 0.5, c[3] + t * 2.0];
        }
        Self {
            rng,
            n,
            index,
            density,
            class: vec![LOW_VEGETATION; n * n],
            height: vec![0.0; n * n],
            colour,
            sar_offset: vec![0.0; n * n],
            roads: Vec::new(),
        }
    }

    fn at(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && (x as usize) < self.n && (y as usize) < self.n)
            .then(|| y as usize * self.n + x as usize)
    }

    /// A grey from the distribution shared by roads, pavements and roofs.
    fn grey(&mut self) -> [f32; 4] {
        let g = (118.0 + 18.0 * self.rng.normal()).clamp(60.0, 190.0) as f32;
        let t = self.rng.normal() as f32 * 3.0;
        [g + t, g, g - t, g * 0.92]
    }

    /// A river (sinuous band) or a pond, in some scenes.
    fn water(&mut self) {
        let n = self.n as f64;
        let pick = self.rng.f64();
        if pick < 0.45 {
            let horizontal = self.rng.chance(0.5);
            let centre = self.rng.range_f64(0.2, 0.8) * n;
            let amp = self.rng.range_f64(0.03, 0.12) * n;
            let period = self.rng.range_f64(0.6, 1.5) * n;
            let phase = self.rng.range_f64(0.0, std::f64::consts::TAU);
            let half = self.rng.range_f64(5.0, 14.0);
            for i in 0..self.n * self.n {
                let (x, y) = ((i % self.n) as f64, (i / self.n) as f64);
                let (along, across) = if horizontal { (x, y) } else { (y, x) };
                let mid = centre + amp * (std::f64::consts::TAU * along / period + phase).sin();
                if (across - mid).abs() < half {
                    self.paint_water(i);
                }
            }
        } else if pick < 0.75 {
            let (cx, cy) = (
                self.rng.range_f64(0.2, 0.8) * n,
                self.rng.range_f64(0.2, 0.8) * n,
            );
            let (rx, ry) = (
                self.rng.range_f64(8.0, 0.12 * n + 9.0),
                self.rng.range_f64(8.0, 0.12 * n + 9.0),
            );
            for i in 0..self.n * self.n {
                let (x, y) = ((i % self.n) as f64, (i / self.n) as f64);
                if ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) < 1.0 {
                    self.paint_water(i);
                }
            }
        }
    }

    fn paint_water(&mut self, i: usize) {
        self.class[i] = WATER;
        self.colour[i] = WATER_COLOUR;
        self.height[i] = 0.0;
    }

    /// A jittered grid of roads; denser scenes have closer roads.
    fn roads(&mut self) {
        let spacing = 120.0 - 65.0 * self.density;
        for horizontal in [true, false] {
            let mut pos = self.rng.range_f64(0.1, 0.6) * spacing;
            while pos < self.n as f64 {
                let width = self.rng.range_i64(6, 12) as usize;
                let start = pos as usize;
                let tone = self.grey();
                self.roads.push((start, width, horizontal));
                for along in 0..self.n {
                    for w in 0..width {
                        let (x, y) = if horizontal {
                            (along, start + w)
                        } else {
                            (start + w, along)
                        };
                        if let Some(i) = self.at(x as i64, y as i64) {
                            if self.class[i] != WATER {
                                self.class[i] = IMPERVIOUS;
                                self.colour[i] = tone;
                                self.sar_offset[i] = 0.0;
                            }
                        }
                    }
                }
                pos += spacing * self.rng.range_f64(0.75, 1.3) + width as f64;
            }
        }
    }

    /// Fills each block between roads: buildings with yards, parks, parking lots or meadows.
    fn blocks(&mut self) {
        let n = self.n;
        let cuts = |horizontal: bool, roads: &[(usize, usize, bool)]| {
            let mut edges = vec![(0usize, 0usize)];
            let mut rs: Vec<(usize, usize)> = roads
                .iter()
                .filter(|r| r.2 == horizontal)
                .map(|r| (r.0, r.1))
                .collect();
            rs.sort_unstable();
            edges.extend(rs);
            edges.push((n, 0));
            edges
                .windows(2)
                .map(|w| (w[0].0 + w[0].1, w[1].0))
                .filter(|(a, b)| b > a)
                .collect::<Vec<_>>()
        };
        let rows = cuts(true, &self.roads);
        let cols = cuts(false, &self.roads);
        for &(y0, y1) in &rows {
            for &(x0, x1) in &cols {
                let kind = self.rng.f64();
                let d = self.density;
                if kind < 0.15 + 0.75 * d {
                    self.built_block(x0, y0, x1, y1);
                } else if kind < 0.92 - 0.1 * d {
                    self.park(x0, y0, x1, y1);
                } else {
                    self.parking(x0, y0, x1, y1);
                }
            }
        }
    }

    fn rect_free(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> bool {
        (y0..y1).all(|y| (x0..x1).all(|x| self.class[y * self.n + x] == LOW_VEGETATION))
    }

    /// A pavement ring, then buildings (flat or gabled) with gardens and trees.
    fn built_block(&mut self, x0: usize, y0: usize, x1: usize, y1: usize) {
        let pave = self.grey();
        let margin = 2;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * self.n + x;
                let edge =
                    x < x0 + margin || x + margin >= x1 || y < y0 + margin || y + margin >= y1;
                if edge && self.class[i] == LOW_VEGETATION {
                    self.class[i] = IMPERVIOUS;
                    self.colour[i] = pave;
                }
            }
        }
        let attempts = 3 + (10.0 * self.density) as usize;
        for _ in 0..attempts {
            let (bw, bh) = (
                self.rng.range_i64(10, 36) as usize,
                self.rng.range_i64(10, 36) as usize,
            );
            if x1 < x0 + bw + 2 * margin + 2 || y1 < y0 + bh + 2 * margin + 2 {
                continue;
            }
            let bx = self
                .rng
                .range_i64((x0 + margin + 1) as i64, (x1 - bw - margin - 1) as i64)
                as usize;
            let by = self
                .rng
                .range_i64((y0 + margin + 1) as i64, (y1 - bh - margin - 1) as i64)
                as usize;
            if !self.rect_free(
                bx.saturating_sub(2),
                by.saturating_sub(2),
                (bx + bw + 2).min(self.n),
                (by + bh + 2).min(self.n),
            ) {
                continue;
            }
            self.building(bx, by, bw, bh);
        }
        // Yards: some paved (with a car), the rest garden with a few trees.
        if self.rng.chance(0.5) {
            let (w, h) = (
                self.rng.range_i64(8, 20) as usize,
                self.rng.range_i64(6, 14) as usize,
            );
            if x1 > x0 + w + 4 && y1 > y0 + h + 4 {
                let ax = self.rng.range_i64(x0 as i64 + 2, (x1 - w - 2) as i64) as usize;
                let ay = self.rng.range_i64(y0 as i64 + 2, (y1 - h - 2) as i64) as usize;
                if self.rect_free(ax, ay, ax + w, ay + h) {
                    let tone = self.grey();
                    self.fill(ax, ay, ax + w, ay + h, IMPERVIOUS, tone);
                    if w >= 10 && h >= 6 {
                        self.car(ax as i64 + 2, ay as i64 + 1, true);
                    }
                }
            }
        }
        let trees = self
            .rng
            .range_i64(0, 2 + (4.0 * (1.0 - self.density)) as i64);
        for _ in 0..trees {
            let (cx, cy) = (
                self.rng.range_i64(x0 as i64, x1 as i64),
                self.rng.range_i64(y0 as i64, y1 as i64),
            );
            let r = self.rng.range_f64(2.5, 5.5);
            self.tree(cx as f64, cy as f64, r);
        }
    }

    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, class: u8, colour: [f32; 4]) {
        for y in y0..y1.min(self.n) {
            for x in x0..x1.min(self.n) {
                let i = y * self.n + x;
                self.class[i] = class;
                self.colour[i] = colour;
            }
        }
    }

    fn building(&mut self, bx: usize, by: usize, bw: usize, bh: usize) {
        let roof = self.grey();
        let eaves = self.rng.range_f64(3.0, 6.0 + 16.0 * self.density);
        let gable = self.rng.chance(0.4);
        let rise = self.rng.range_f64(1.5, 4.0);
        let along_x = bw >= bh;
        let sar = self.rng.normal() as f32 * 1.0;
        for y in by..by + bh {
            for x in bx..bx + bw {
                let i = y * self.n + x;
                let t = if along_x {
                    (y - by) as f64 / (bh - 1).max(1) as f64
                } else {
                    (x - bx) as f64 / (bw - 1).max(1) as f64
                };
                let h = if gable {
                    eaves + rise * (1.0 - (2.0 * t - 1.0).abs())
                } else {
                    eaves
                };
                self.class[i] = BUILDING;
                self.colour[i] = roof;
                self.height[i] = h as f32;
                self.sar_offset[i] = sar;
            }
        }
    }

    /// A dome-shaped crown; it covers grass, pavement and roads, never buildings or water.
    fn tree(&mut self, cx: f64, cy: f64, r: f64) {
        let h = self.rng.range_f64(6.0, 18.0);
        let sar = self.rng.normal() as f32 * 0.8;
        let tone = self.rng.normal() as f32 * 5.0;
        let reach = r.ceil() as i64;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let d2 = (dx * dx + dy * dy) as f64 / (r * r);
                let Some(i) = self.at(cx as i64 + dx, cy as i64 + dy) else {
                    continue;
                };
                if d2 >= 1.0 || !matches!(self.class[i], LOW_VEGETATION | IMPERVIOUS | TREE) {
                    continue;
                }
                let hh = (h * (0.55 + 0.45 * (1.0 - d2).sqrt())) as f32;
                if self.class[i] == TREE && self.height[i] >= hh {
                    continue;
                }
                self.class[i] = TREE;
                self.height[i] = hh;
                self.colour[i] = [
                    GRASS[0] + tone * 0.6,
                    GRASS[1] + tone,
                    GRASS[2] + tone * 0.5,
                    GRASS[3] + tone * 2.0,
                ];
                self.sar_offset[i] = sar;
            }
        }
    }

    /// Clusters of trees on a meadow, sometimes a pond.
    fn park(&mut self, x0: usize, y0: usize, x1: usize, y1: usize) {
        let area = ((x1 - x0) * (y1 - y0)) as f64;
        let clusters = (area / 900.0).ceil() as usize;
        for _ in 0..clusters {
            let (cx, cy) = (
                self.rng.range_f64(x0 as f64, x1 as f64),
                self.rng.range_f64(y0 as f64, y1 as f64),
            );
            let members = self.rng.range_i64(1, 7);
            for _ in 0..members {
                let (tx, ty) = (cx + self.rng.normal() * 6.0, cy + self.rng.normal() * 6.0);
                let r = self.rng.range_f64(3.0, 8.0);
                self.tree(tx, ty, r);
            }
        }
    }

    /// A paved lot with rows of cars.
    fn parking(&mut self, x0: usize, y0: usize, x1: usize, y1: usize) {
        let tone = self.grey();
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * self.n + x;
                if self.class[i] == LOW_VEGETATION {
                    self.class[i] = IMPERVIOUS;
                    self.colour[i] = tone;
                }
            }
        }
        let mut y = y0 + 2;
        while y + 10 < y1 {
            let mut x = x0 + 2;
            while x + 5 < x1 {
                if self.rng.chance(0.35 + 0.5 * self.density) {
                    self.car(x as i64, y as i64, false);
                }
                x += 6;
            }
            y += 14;
        }
    }

    /// A car (about 2 m x 4.5 m) at (x, y), long side horizontal or vertical, on pavement only.
    fn car(&mut self, x: i64, y: i64, horizontal: bool) {
        let (w, h) = if horizontal { (9, 4) } else { (4, 9) };
        let colour = CAR_COLOURS[self.rng.below(CAR_COLOURS.len() as u64) as usize];
        let ok = (0..h).all(|dy| {
            (0..w).all(|dx| {
                self.at(x + dx, y + dy)
                    .is_some_and(|i| self.class[i] == IMPERVIOUS)
            })
        });
        if !ok {
            return;
        }
        for dy in 0..h {
            for dx in 0..w {
                if let Some(i) = self.at(x + dx, y + dy) {
                    self.class[i] = CAR;
                    self.colour[i] = colour;
                    self.height[i] = 1.5;
                }
            }
        }
    }

    /// Trees along some roads.
    fn street_trees(&mut self) {
        let roads = self.roads.clone();
        for (start, width, horizontal) in roads {
            if !self.rng.chance(0.3 + 0.3 * (1.0 - self.density)) {
                continue;
            }
            let side = if self.rng.chance(0.5) {
                start as f64 - 3.0
            } else {
                (start + width) as f64 + 3.0
            };
            let mut along = self.rng.range_f64(0.0, 12.0);
            while along < self.n as f64 {
                let r = self.rng.range_f64(3.0, 5.5);
                let (x, y) = if horizontal {
                    (along, side)
                } else {
                    (side, along)
                };
                self.tree(x, y, r);
                along += self.rng.range_f64(10.0, 18.0);
            }
        }
    }

    /// Cars parked or driving along the roads.
    fn road_cars(&mut self) {
        let roads = self.roads.clone();
        for (start, width, horizontal) in roads {
            let count = (self.n as f64 / 40.0 * (0.3 + self.density)).round() as usize;
            for _ in 0..count {
                let along = self.rng.range_i64(0, self.n as i64 - 10);
                let lane = self
                    .rng
                    .range_i64(start as i64 + 1, (start + width) as i64 - 5);
                let (x, y) = if horizontal {
                    (along, lane)
                } else {
                    (lane, along)
                };
                self.car(x, y, horizontal);
            }
        }
    }

    /// Renders optical, DSM and SAR from the drawn classes, heights and colours.
    fn finish(mut self) -> SceneRasters {
        let n = self.n;
        let npx = n * n;
        // Sun from the south-east to south-west; shadows fall to the north.
        let azimuth = self.rng.range_f64(120.0, 240.0).to_radians();
        let sun_elevation = self.rng.range_f64(35.0, 60.0).to_radians();
        let shadow = cast_shadows(
            &self.height,
            n,
            (azimuth.sin(), -azimuth.cos()),
            sun_elevation.tan(),
        );
        let shade = self.rng.range_f64(0.33, 0.42) as f32;
        let mut optical = vec![0u8; 4 * npx];
        for i in 0..npx {
            let factor = if shadow[i] { shade } else { 1.0 };
            let smooth = if self.class[i] == WATER { 0.5 } else { 1.0 };
            for b in 0..4 {
                let v = self.colour[i][b] * factor + (self.rng.normal() as f32) * 6.0 * smooth;
                optical[b * npx + i] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        let dsm: Vec<f32> = (0..npx)
            .map(|i| {
                let rough = if self.class[i] == LOW_VEGETATION {
                    0.25
                } else {
                    0.12
                };
                let v = self.height[i] + (self.rng.normal() as f32) * rough;
                (v * 100.0).round() / 100.0
            })
            .collect();
        let sar = self.render_sar();
        let x0 = 400_000.0 + (self.index % 20) as f64 * 1000.0;
        let y0 = 5_400_000.0 - (self.index / 20) as f64 * 1000.0;
        SceneRasters {
            size: n,
            optical,
            dsm,
            sar,
            label: self.class,
            shadow,
            sun_azimuth: azimuth,
            cloud_mask: None,
            georef: GeoRef::north_up(x0, y0, PIXEL_SIZE, EPSG),
        }
    }

    /// SAR backscatter in dB: class backscatter plus per-object offsets, double bounce on the
    /// building edges facing the sensor, radar shadow behind tall objects, a coarser resolution
    /// (3x3 mean), 4-look multiplicative speckle, and in some scenes a nodata swath edge.
    fn render_sar(&mut self) -> Vec<f32> {
        let n = self.n;
        let npx = n * n;
        // The sensor looks from the east or the west; 35 degree incidence.
        let look: i64 = if self.rng.chance(0.5) { 1 } else { -1 };
        let incidence = 35f64.to_radians();
        let radar_shadow = cast_shadows(&self.height, n, (look as f64, 0.0), 1.0 / incidence.tan());
        let mut linear = vec![0f64; npx];
        for i in 0..npx {
            let (x, y) = ((i % n) as i64, (i / n) as i64);
            let mut db = match self.class[i] {
                IMPERVIOUS => -14.0,
                BUILDING => -6.5,
                LOW_VEGETATION => -13.5,
                TREE => -7.5,
                CAR => 0.0,
                _ => -24.0,
            } + f64::from(self.sar_offset[i]);
            if self.class[i] == BUILDING {
                let facing = (1..=2).any(|d| {
                    self.at(x + look * d, y)
                        .is_none_or(|j| self.class[j] != BUILDING)
                });
                if facing {
                    db = 6.0;
                }
            } else if radar_shadow[i] && self.class[i] != CAR {
                db = db.min(-20.0);
            }
            linear[i] = 10f64.powf(db / 10.0);
        }
        let blurred = box3(&linear, n);
        let swath_edge = self
            .rng
            .chance(0.2)
            .then(|| (self.rng.below(4), self.rng.range_f64(0.15, 0.4) * n as f64));
        (0..npx)
            .map(|i| {
                let (x, y) = ((i % n) as f64, (i / n) as f64);
                if let Some((corner, reach)) = swath_edge {
                    let (cx, cy) = match corner {
                        0 => (x, y),
                        1 => (n as f64 - 1.0 - x, y),
                        2 => (x, n as f64 - 1.0 - y),
                        _ => (n as f64 - 1.0 - x, n as f64 - 1.0 - y),
                    };
                    if cx + cy < reach {
                        return SAR_NODATA;
                    }
                }
                let v = blurred[i] * self.rng.speckle(4);
                ((10.0 * v.max(1e-6).log10()) as f32 * 100.0).round() / 100.0
            })
            .collect()
    }
}

/// Pixels in the shadow of taller pixels: marching from each pixel towards the light
/// (`toward`, a unit vector in pixel coordinates), a pixel is shaded when something rises above
/// the ray of slope `tan_elevation`.
pub(crate) fn cast_shadows(
    height: &[f32],
    n: usize,
    toward: (f64, f64),
    tan_elevation: f64,
) -> Vec<bool> {
    let max_h = height.iter().copied().fold(0.0f32, f32::max) as f64;
    let reach = (max_h / tan_elevation / PIXEL_SIZE).ceil() as usize + 1;
    (0..n * n)
        .map(|i| {
            let (x, y) = ((i % n) as f64, (i / n) as f64);
            let h0 = f64::from(height[i]);
            (1..=reach).any(|t| {
                let (qx, qy) = (
                    (x + toward.0 * t as f64).round(),
                    (y + toward.1 * t as f64).round(),
                );
                if qx < 0.0 || qy < 0.0 || qx >= n as f64 || qy >= n as f64 {
                    return false;
                }
                let q = qy as usize * n + qx as usize;
                f64::from(height[q]) - h0 > t as f64 * PIXEL_SIZE * tan_elevation
            })
        })
        .collect()
}

/// 3x3 mean with edge clamping.
fn box3(v: &[f64], n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|i| {
            let (x, y) = ((i % n) as i64, (i / n) as i64);
            let mut sum = 0.0;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (qx, qy) = (
                        (x + dx).clamp(0, n as i64 - 1),
                        (y + dy).clamp(0, n as i64 - 1),
                    );
                    sum += v[qy as usize * n + qx as usize];
                }
            }
            sum / 9.0
        })
        .collect()
}
