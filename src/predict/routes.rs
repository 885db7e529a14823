//! Routes per pixel: which modalities each pixel of a scene has, and which branch classifies it.
//!
//! A modality is available at a pixel where its input is valid (GDAL's mask model: nodata,
//! masks, alpha, NaN, outside the input's coverage of the grid), where no `--missing-mask` of
//! that modality marks it, and where both hold at every pixel within `margin` pixels (a square
//! neighbourhood; pixels outside the scene do not count), so the teacher never reads filled
//! pixels near a pixel it classifies. The reader reads each strip with `margin` extra rows above
//! and below, so a pixel's availability is its own, whichever window covers it. A pixel's
//! pattern is the bitmask of its unavailable modalities (those not given included); the
//! checkpoint's [`RouteTable`] resolves it to a route code ([`Routing`]). Near a pattern that
//! lacks strictly more, a pixel mixes that pattern's route into its own over a raised-cosine
//! band ([`strip_blend`]), so route boundaries do not show as seams. The stitcher carries
//! the pattern as one more channel; the sink turns it back into the pixel's route, counts the
//! pixels of each pattern and writes the route map.

use anyhow::{anyhow, Result};
use std::path::PathBuf;

use crate::data::grid::GridSource;
use crate::data::raster::Pixels;
use crate::model::config::ModelConfig;
use crate::model::route::{Fallback, Resolution, Route, RouteTable, ROUTE_NODATA};

/// The default of [`super::PredictOptions::margin`] (`--context-margin`), in pixels: chosen on
/// the validation split of the gaps benchmark over 3 seeds, where every margin above 0 scored
/// lower (docs/results.md, "Routes per pixel on the gaps benchmark").
pub const DEFAULT_CONTEXT_MARGIN: usize = 0;

/// The default of [`super::PredictOptions::route_blend`] (`--route-blend`), in pixels: the
/// width of the band on the richer route's side of a route boundary over which the two
/// routes' probabilities are mixed: the narrowest band that removes the seam (docs/predict.md,
/// "The route blend, measured") at the validation mIoU of the hard switch on the gaps
/// benchmark (docs/results.md).
pub const DEFAULT_ROUTE_BLEND: usize = 8;

/// A `--missing-mask` placed on the scene's grid: nonzero where its modality is missing.
pub(super) struct MaskInput {
    /// The model modality it masks.
    pub(super) index: usize,
    pub(super) source: GridSource,
}

/// How a scene's pixels find their route: the table of the checkpoint and the route of every
/// pattern.
pub(super) struct Routing {
    pub(super) table: RouteTable,
    /// Per pattern (the index): its route.
    pub(super) lookup: Vec<Resolution>,
    /// Bits of the modalities not given (unavailable at every pixel).
    pub(super) absent: u8,
    /// Context margin in pixels (0 for one route per scene).
    pub(super) margin: usize,
    /// Width in pixels of the band where a richer route is mixed with a poorer neighbour
    /// ([`strip_blend`]); 0: routes switch hard (and for one route per scene).
    pub(super) blend: usize,
    /// Routes per pixel (`false`: one route per scene, nodata where any given input lacks data).
    pub(super) per_pixel: bool,
}

/// Bits of the modalities not `given`.
fn absent_bits(given: &[bool]) -> u8 {
    (given.iter().enumerate())
        .filter(|(_, &g)| !g)
        .fold(0, |p, (i, _)| p | (1u8 << i))
}

impl Routing {
    /// Routes per pixel by the table's fallback rule.
    ///
    /// # Errors
    /// As [`RouteTable::of`]; the error of [`Route::choose`] when no pixel could have a route
    /// (the modalities given already lack a student and `allow_fill` is off).
    pub(super) fn per_pixel(
        cfg: &ModelConfig,
        given: &[bool],
        allow_fill: bool,
        margin: usize,
        blend: usize,
    ) -> Result<Self> {
        let table = RouteTable::of(cfg)?;
        let absent = absent_bits(given);
        let lookup = table.lookup(allow_fill);
        // A pixel lacking more than the absent set has no route either (its supersets are
        // among the absent set's): the scene would be nodata everywhere.
        if lookup[usize::from(absent)].code == ROUTE_NODATA {
            Route::choose(cfg, given, allow_fill)?;
        }
        Ok(Self {
            table,
            lookup,
            absent,
            margin,
            blend,
            per_pixel: true,
        })
    }

    /// One route for the whole scene: `route` where every given input has data, nodata
    /// elsewhere.
    pub(super) fn one_route(cfg: &ModelConfig, given: &[bool], route: &Route) -> Result<Self> {
        let table = RouteTable::of(cfg)?;
        let absent = absent_bits(given);
        let code = table
            .code_of(route)
            .ok_or_else(|| anyhow!("the route {} has no code", route.label(cfg)))?;
        let lookup = (0..=u8::MAX)
            .map(|p| match p == absent {
                true => Resolution {
                    code,
                    fallback: Fallback::Exact,
                },
                false => Resolution {
                    code: ROUTE_NODATA,
                    fallback: Fallback::NoStudent,
                },
            })
            .collect();
        Ok(Self {
            table,
            lookup,
            absent,
            margin: 0,
            blend: 0,
            per_pixel: false,
        })
    }

    /// The route code of `pattern`.
    pub(super) fn code(&self, pattern: u8) -> u8 {
        self.lookup[usize::from(pattern)].code
    }
}

/// Sets every pixel of `available` (`height x width`, row-major) that has an unavailable pixel
/// within `margin` pixels (a square neighbourhood, clamped to the plane) to unavailable: a
/// separable minimum filter from prefix counts, linear in the plane's size.
pub(super) fn erode(available: &mut [bool], width: usize, height: usize, margin: usize) {
    if margin == 0 || available.iter().all(|&a| a) {
        return;
    }
    let mut counts = vec![0u32; width + 1];
    let mut rows_ok = vec![true; available.len()];
    for y in 0..height {
        let row = &available[y * width..(y + 1) * width];
        for x in 0..width {
            counts[x + 1] = counts[x] + u32::from(!row[x]);
        }
        for x in 0..width {
            let (lo, hi) = (x.saturating_sub(margin), (x + margin + 1).min(width));
            rows_ok[y * width + x] = counts[hi] == counts[lo];
        }
    }
    let mut below = vec![0u32; (height + 1) * width];
    for y in 0..height {
        for x in 0..width {
            below[(y + 1) * width + x] = below[y * width + x] + u32::from(!rows_ok[y * width + x]);
        }
    }
    for y in 0..height {
        let (lo, hi) = (y.saturating_sub(margin), (y + margin + 1).min(height));
        for x in 0..width {
            available[y * width + x] = below[hi * width + x] == below[lo * width + x];
        }
    }
}

/// Marks the pixels of `strips` (the given inputs', model modality `indices[i]`) that one of
/// `masks` (modality, pixels of the same rows) flags as missing (nonzero where the mask is
/// valid) as invalid: a masked pixel is missing like a nodata one, filled with the training
/// mean where a branch reads it.
pub(super) fn apply_masks(strips: &mut [Pixels], indices: &[usize], masks: &[(usize, Pixels)]) {
    for (strip, &index) in strips.iter_mut().zip(indices) {
        for (_, mask) in masks.iter().filter(|(m, _)| *m == index) {
            let flags = mask.band(0);
            for (valid, (&v, &ok)) in strip.valid.iter_mut().zip(flags.iter().zip(&mask.valid)) {
                *valid &= !(ok && v != 0.0);
            }
        }
    }
}

/// The pattern of every pixel of a strip: the absent bits, and bit `index` where a given input
/// is not available (invalid, or an invalid pixel within the margin). The margin never takes a
/// trained branch away: where the pattern with the margin has no route, or only the filled
/// teacher while the pixel's own availability (the pattern without the margin) has the teacher or
/// a student, the pixel's own availability decides. `strips` are the given inputs'
/// (model modality `indices[i]`), masks applied ([`apply_masks`]).
pub(super) fn strip_patterns(strips: &[Pixels], indices: &[usize], routing: &Routing) -> Vec<u8> {
    let (width, height) = (strips[0].width, strips[0].height);
    let mut patterns = vec![routing.absent; width * height];
    let mut own = patterns.clone();
    for (strip, &index) in strips.iter().zip(indices) {
        if strip.valid.iter().all(|&v| v) {
            continue;
        }
        let mut available = strip.valid.clone();
        erode(&mut available, width, height, routing.margin);
        for (p, &a) in patterns.iter_mut().zip(&available) {
            if !a {
                *p |= 1u8 << index;
            }
        }
        for (p, &v) in own.iter_mut().zip(&strip.valid) {
            if !v {
                *p |= 1u8 << index;
            }
        }
    }
    let trained = |p: u8| routing.lookup[usize::from(p)].fallback.is_trained();
    for (p, &o) in patterns.iter_mut().zip(&own) {
        let lost = routing.code(*p) == ROUTE_NODATA;
        if lost || (!trained(*p) && trained(o)) {
            *p = o;
        }
    }
    patterns
}

/// How the pixels of a strip or window near a poorer route mix it in (row-major planes): the
/// poorer route's code ([`ROUTE_NODATA`] where the pixel takes its own route alone) and the
/// weight `w` of the pixel's own route, so its probabilities are `w P_own + (1 - w) P_poorer`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Blend {
    pub(super) partners: Vec<u8>,
    pub(super) weights: Vec<f32>,
}

/// The weight of the richer route at Chebyshev distance `d` (pixels, >= 1) from the nearest
/// pixel of a poorer pattern: a raised cosine rising from 0 at the boundary to 1 at `band`
/// pixels in, the ramp windows are blended by.
pub(super) fn blend_weight(d: usize, band: usize) -> f32 {
    if d >= band {
        return 1.0;
    }
    0.5 - 0.5 * (std::f32::consts::PI * d as f32 / band as f32).cos()
}

/// Chebyshev distance (pixels, at most `cap`) from each pixel of a `height x width` plane to
/// the nearest pixel where `target` holds (`cap` where none is that near): a two-pass chamfer
/// with unit steps over the 8 neighbours, exact for this metric. Pixels outside the plane are
/// not targets.
pub(super) fn chebyshev_distance(
    target: &[bool],
    width: usize,
    height: usize,
    cap: usize,
) -> Vec<usize> {
    let mut d: Vec<usize> = target.iter().map(|&t| if t { 0 } else { cap }).collect();
    for y in 0..height {
        for x in 0..width {
            let mut best = d[y * width + x];
            if x > 0 {
                best = best.min(d[y * width + x - 1] + 1);
            }
            if y > 0 {
                let up = (y - 1) * width;
                for xx in x.saturating_sub(1)..(x + 2).min(width) {
                    best = best.min(d[up + xx] + 1);
                }
            }
            d[y * width + x] = best;
        }
    }
    for y in (0..height).rev() {
        for x in (0..width).rev() {
            let mut best = d[y * width + x];
            if x + 1 < width {
                best = best.min(d[y * width + x + 1] + 1);
            }
            if y + 1 < height {
                let down = (y + 1) * width;
                for xx in x.saturating_sub(1)..(x + 2).min(width) {
                    best = best.min(d[down + xx] + 1);
                }
            }
            d[y * width + x] = best;
        }
    }
    d
}

/// The mix of routes near their boundaries in a strip of `patterns` (`height x width`): a
/// pixel of pattern P whose route runs (not nodata) is mixed with the route of the nearest
/// pixel (Chebyshev distance d < `routing.blend`) of a pattern Q that lacks strictly more
/// (Q a superset of P) and takes another route that runs, with weight [`blend_weight`]`(d)` on
/// its own route. That route reads only modalities outside Q, all available at the pixel, so
/// no branch ever reads a missing input. Patterns neither of which contains the other (SAR
/// missing next to optical missing) switch hard. `None` when no pixel mixes (a strip of one
/// pattern costs nothing). Exact for rows at least `blend` rows inside the strip, which the
/// reader's context rows ensure.
pub(super) fn strip_blend(
    patterns: &[u8],
    width: usize,
    height: usize,
    routing: &Routing,
) -> Option<Blend> {
    let band = routing.blend;
    let first = *patterns.first()?;
    if band == 0 || patterns.iter().all(|&p| p == first) {
        return None;
    }
    let mut seen = [false; 256];
    for &p in patterns {
        seen[usize::from(p)] = true;
    }
    let present: Vec<u8> = (0..=u8::MAX).filter(|&p| seen[usize::from(p)]).collect();
    let runs = |p: u8| routing.code(p) != ROUTE_NODATA;
    // Distances to each pattern that some other present pattern could mix in.
    let distances: Vec<(u8, Vec<usize>)> = (present.iter())
        .filter(|&&q| runs(q) && present.iter().any(|&p| poorer(q, p, routing)))
        .map(|&q| {
            let target: Vec<bool> = patterns.iter().map(|&p| p == q).collect();
            (q, chebyshev_distance(&target, width, height, band))
        })
        .collect();
    let mut blend = Blend {
        partners: vec![ROUTE_NODATA; patterns.len()],
        weights: vec![1.0; patterns.len()],
    };
    let mut any = false;
    for (i, &p) in patterns.iter().enumerate() {
        let nearest = (distances.iter())
            .filter(|(q, d)| d[i] < band && poorer(*q, p, routing))
            .min_by_key(|(_, d)| d[i]);
        if let Some((q, d)) = nearest {
            blend.partners[i] = routing.code(*q);
            blend.weights[i] = blend_weight(d[i], band);
            any = true;
        }
    }
    any.then_some(blend)
}

/// Whether pattern `q` may be mixed into a pixel of pattern `p`: it lacks strictly more
/// modalities, both routes run and they differ, and `q`'s route is a student: a filled teacher
/// is a fallback far below any student (on the gaps benchmark, mixing it in took 11 points off
/// the student pixels beside it), so it meets its neighbours at a hard switch.
fn poorer(q: u8, p: u8, routing: &Routing) -> bool {
    let (own, other) = (routing.code(p), routing.code(q));
    let student = routing.lookup[usize::from(q)].fallback.is_trained();
    q != p && q & p == p && own != ROUTE_NODATA && other != ROUTE_NODATA && own != other && student
}

/// Pixels of each pattern in a scene's output (index: the pattern).
#[derive(Debug, Clone)]
pub(super) struct PatternCounts(pub(super) Vec<u64>);

impl Default for PatternCounts {
    fn default() -> Self {
        Self(vec![0; 256])
    }
}

impl PatternCounts {
    fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Pixels per route code (index: the code, [`ROUTE_NODATA`] last at 255).
    pub(super) fn per_code(&self, routing: &Routing) -> Vec<u64> {
        let mut codes = vec![0u64; 256];
        for (p, &n) in self.0.iter().enumerate() {
            codes[usize::from(routing.lookup[p].code)] += n;
        }
        codes
    }

    /// Pixels per fallback kind, in [`Fallback`] order, those with pixels only.
    pub(super) fn per_fallback(&self, routing: &Routing) -> Vec<(Fallback, u64)> {
        let mut kinds: Vec<(Fallback, u64)> = Vec::new();
        for (p, &n) in self.0.iter().enumerate().filter(|(_, &n)| n > 0) {
            let kind = routing.lookup[p].fallback;
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, m)) => *m += n,
                None => kinds.push((kind, n)),
            }
        }
        kinds.sort();
        kinds
    }

    /// One line per pattern that covers pixels and does not get the teacher: its share, what it
    /// lacks and the route or fallback that took it (`31.2 % of pixels lack sar: student[sar]`).
    pub(super) fn notes(&self, routing: &Routing, cfg: &ModelConfig) -> Vec<String> {
        let total = self.total().max(1) as f64;
        let mut lines = Vec::new();
        for (p, &n) in self.0.iter().enumerate().filter(|(p, &n)| n > 0 && *p != 0) {
            let share = format!("{:.1} %", 100.0 * n as f64 / total);
            let lacks: Vec<&str> = (cfg.modalities.iter().enumerate())
                .filter(|(i, _)| p & (1 << i) != 0)
                .map(|(_, m)| m.name.as_str())
                .collect();
            let lacks = lacks.join("+");
            let resolution = routing.lookup[p];
            let label = routing.table.label(resolution.code);
            lines.push(match resolution.fallback {
                Fallback::Exact => format!("{share} of pixels lack {lacks}: {label}"),
                Fallback::Superset => format!(
                    "{share} of pixels lack {lacks} and the checkpoint has no student for them: \
                     {label}, which ignores the inputs it was not trained with"
                ),
                Fallback::Fill => {
                    let route = routing.table.route(resolution.code);
                    let said = route.map(|r| r.describe(cfg)).unwrap_or_default();
                    format!("{share} of pixels lack {lacks}: {label}, the {said}")
                }
                Fallback::NoStudent => format!(
                    "{share} of pixels lack {lacks} and the checkpoint has no student for them: \
                     nodata (--allow-fill runs the teacher with them filled)"
                ),
                Fallback::NoModality => format!("{share} of pixels have no modality: nodata"),
            });
        }
        lines
    }

    /// Why a scene with no classified pixel has none: the given inputs without data anywhere
    /// (nodata, masked or outside their coverage), else the route the pixels lack.
    pub(super) fn nothing_classified(
        &self,
        routing: &Routing,
        cfg: &ModelConfig,
        given: &[(usize, PathBuf)],
        allow_fill: bool,
    ) -> Result<()> {
        let everywhere =
            |i: usize| (self.0.iter().enumerate()).all(|(p, &n)| n == 0 || p & (1 << i) != 0);
        let empty: Vec<String> = (given.iter())
            .filter(|(i, _)| everywhere(*i))
            .map(|(i, path)| format!("--{} {}", cfg.modalities[*i].name, path.display()))
            .collect();
        let all: Vec<String> = (given.iter())
            .map(|(_, path)| path.display().to_string())
            .collect();
        if !empty.is_empty() && (empty.len() == given.len() || !routing.per_pixel) {
            return Err(NothingToClassify(format!(
                "every pixel is nodata in at least one input: {} has no data on the grid \
                 (nodata, masked or outside its coverage): nothing to classify",
                empty.join(" and ")
            ))
            .into());
        }
        if !routing.per_pixel {
            return Err(NothingToClassify(format!(
                "every pixel is nodata in at least one input ({}): nothing to classify",
                all.join(", ")
            ))
            .into());
        }
        let most = (self.0.iter().enumerate())
            .max_by_key(|(_, &n)| n)
            .map_or(routing.absent, |(p, _)| p as u8);
        let lacking: Vec<bool> = (0..cfg.modalities.len())
            .map(|i| most & (1 << i) == 0)
            .collect();
        let reason = match Route::choose(cfg, &lacking, allow_fill) {
            Err(e) => e.to_string(),
            Ok(_) => "no route".to_string(),
        };
        Err(NothingToClassify(format!("no pixel can be classified: {reason}")).into())
    }
}

/// A scene where no branch can classify any pixel (its message names the empty input or the
/// route the pixels lack): `dis2 eval` skips such a scene where `dis2 predict` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingToClassify(pub String);

impl std::fmt::Display for NothingToClassify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NothingToClassify {}

/// The route codes present among a batch's windows (`codes`, one plane per window, and the
/// poorer routes their `blends` mix in), ascending, nodata left out.
pub(super) fn codes_present(codes: &[Vec<u8>], blends: &[Option<Blend>]) -> Vec<u8> {
    let mut seen = [false; 256];
    for plane in codes {
        for &c in plane {
            seen[usize::from(c)] = true;
        }
    }
    for blend in blends.iter().flatten() {
        for &c in &blend.partners {
            seen[usize::from(c)] = true;
        }
    }
    (0..ROUTE_NODATA)
        .filter(|&c| seen[usize::from(c)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The separable filter equals the square neighbourhood computed by brute force, borders
    /// clamped (outside the plane is not a gap).
    #[test]
    fn erosion_is_a_square_minimum_filter_clamped_at_the_borders() {
        let (w, h) = (13, 9);
        let plane: Vec<bool> = (0..w * h).map(|i| (i * 7919) % 23 != 0).collect();
        for margin in 0..4 {
            let mut fast = plane.clone();
            erode(&mut fast, w, h, margin);
            for y in 0..h {
                for x in 0..w {
                    let mut ok = true;
                    for yy in y.saturating_sub(margin)..(y + margin + 1).min(h) {
                        for xx in x.saturating_sub(margin)..(x + margin + 1).min(w) {
                            ok &= plane[yy * w + xx];
                        }
                    }
                    assert_eq!(fast[y * w + x], ok, "margin {margin}, ({y}, {x})");
                }
            }
        }
        let mut full = vec![true; w * h];
        erode(&mut full, w, h, 3);
        assert!(full.iter().all(|&a| a), "scene borders are not gaps");
    }

    /// The chamfer equals the Chebyshev distance to the nearest target by brute force, capped.
    #[test]
    fn chamfer_is_the_chebyshev_distance_capped() {
        let (w, h, cap) = (17, 11, 6);
        let target: Vec<bool> = (0..w * h).map(|i| (i * 7919) % 37 == 0).collect();
        let fast = chebyshev_distance(&target, w, h, cap);
        for y in 0..h {
            for x in 0..w {
                let mut best = cap;
                for (i, _) in target.iter().enumerate().filter(|(_, &t)| t) {
                    let (tx, ty) = (i % w, i / w);
                    best = best.min(tx.abs_diff(x).max(ty.abs_diff(y)));
                }
                assert_eq!(fast[y * w + x], best, "({x}, {y})");
            }
        }
    }

    fn routing(blend: usize) -> Routing {
        let modality = |name: &str, channels| crate::model::modality::ModalitySpec {
            name: name.to_string(),
            channels,
        };
        let cfg = ModelConfig {
            base_width: 8,
            num_classes: 2,
            crop: [16, 16],
            heads: 8,
            ffn_dim: 16,
            depth: 1,
            modalities: vec![modality("optical", 4), modality("sar", 1)],
            scenarios: Some(vec![vec!["optical".to_string()], vec!["sar".to_string()]]),
            decoder: Default::default(),
            fusion: Default::default(),
        };
        Routing::per_pixel(&cfg, &[true, true], false, 0, blend).unwrap()
    }

    /// Left half: every modality (the teacher); right half: the SAR missing (bit 1), or the
    /// optical image missing (bit 0) in the bottom rows. The teacher mixes in the nearer
    /// student within the band, weight from the distance; students[sar] and [optical] (neither
    /// missing set contains the other) switch hard; a blend of 0 or one pattern mixes nothing.
    #[test]
    fn the_richer_route_mixes_in_the_nearest_poorer_one_within_the_band() {
        let (w, h, band) = (12, 10, 4);
        let routing = routing(band);
        let patterns: Vec<u8> = (0..w * h)
            .map(|i| match (i % w < 6, i / w >= 8) {
                (true, _) => 0,
                (false, false) => 0b10,
                (false, true) => 0b01,
            })
            .collect();
        let blend = strip_blend(&patterns, w, h, &routing).unwrap();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (partner, weight) = (blend.partners[i], blend.weights[i]);
                if x >= 6 {
                    assert_eq!(partner, ROUTE_NODATA, "({x}, {y}): students do not mix");
                    continue;
                }
                let d = 6 - x;
                // Chebyshev distances to the SAR-missing rows (< 8) and the optical-missing
                // ones; ties go to the lower pattern.
                let to_sar = d.max(y.saturating_sub(7));
                let to_optical = d.max(8usize.saturating_sub(y));
                let nearest = if to_optical <= to_sar { 0b01 } else { 0b10 };
                match d < band {
                    true => {
                        assert_eq!(partner, routing.code(nearest), "({x}, {y})");
                        assert_eq!(weight, blend_weight(d, band), "({x}, {y})");
                    }
                    false => assert_eq!((partner, weight), (ROUTE_NODATA, 1.0), "({x}, {y})"),
                }
            }
        }
        assert!(blend_weight(1, band) > 0.0 && blend_weight(band - 1, band) < 1.0);
        assert_eq!(blend_weight(band, band), 1.0);
        assert!(strip_blend(&patterns, w, h, &super::tests::routing(0)).is_none());
        assert!(strip_blend(&vec![0b10; w * h], w, h, &routing).is_none());
    }
}
