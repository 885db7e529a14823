//! Windows of a scene's grid read from a file on another grid, through GDAL's warper
//! ([`super::gdal_warp`]); [`super::grid`] decides which files are warped and how.
//!
//! Validity comes out as an aligned read's does, through the one validity path: the part of the
//! file a window needs is read by [`raster::read_window_with`] (GDAL's mask model: masks, alpha,
//! nodata, NaN, and the label nodata rule, see [`super::validity`]) and handed to the warper as
//! an in-memory raster whose per-dataset mask is that validity, so the warper resamples valid
//! pixels only and applies no rule of its own. That copy holds the values as read (each band's
//! GDAL scale and offset applied), so the warper resamples what the pixels mean, never stored
//! counts, and no scale is applied twice. The destination starts all NaN with NaN as its
//! nodata; [`raster::read_window`] reads it back, so grid pixels the file does not cover, or
//! covers only with invalid pixels, are invalid.

use anyhow::{bail, Context, Result};
use gdal::raster::Buffer;
use gdal::spatial_ref::{AxisMappingStrategy, SpatialRef};
use gdal::{Dataset, DriverManager, Gcp};
use std::path::Path;

use super::config::Resampling;
use super::gdal_warp::{warp_into, PixelTransformer};
use super::raster::{self, Pixels, Window};
use super::validity::{AlphaRule, NodataRule};

/// Points per side of the lattice over a destination window mapped into the file to find the
/// file's pixels it needs.
const LATTICE: usize = 16;

/// The grid a file is warped onto: size, geotransform and CRS (WKT).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub width: usize,
    pub height: usize,
    pub geo_transform: [f64; 6],
    pub crs_wkt: Option<String>,
}

/// The resampling of one file onto a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Warp {
    pub resampling: Resampling,
    /// Data bands of the file (alpha bands are masks, see [`super::validity::BandLayout`]).
    pub bands: usize,
    /// Source pixels one grid pixel spans along a side (above 1: downsampling).
    pub scale: f64,
    target: Target,
}

impl Warp {
    pub(crate) fn new(resampling: Resampling, bands: usize, scale: f64, target: Target) -> Self {
        Self {
            resampling,
            bands,
            scale,
            target,
        }
    }

    /// Pixels of `window` (grid pixels; the part outside the grid is invalid) from the open
    /// file `src` at `path`, resampled by GDAL's warper; `rule` says how the file's declared
    /// nodata counts and `alpha` what its bands marked as alpha are, as in
    /// [`raster::read_window_with`].
    ///
    /// # Errors
    /// Reading the file (named), or a warp GDAL refuses (with GDAL's message).
    pub(crate) fn read(
        &self,
        src: &Dataset,
        path: &Path,
        window: Window,
        rule: NodataRule,
        alpha: AlphaRule,
    ) -> Result<Pixels> {
        let Some((x, y, w, h)) = window.clip(self.target.width, self.target.height) else {
            return Ok(Pixels::invalid(self.bands, window.width, window.height));
        };
        let dst = destination(&self.target, (x, y, w, h), self.bands)?;
        let inside = Window::new(
            window.x - x as i64,
            window.y - y as i64,
            window.width,
            window.height,
        );
        let Some(region) = self.source_region(src, &dst)? else {
            return Ok(Pixels::invalid(self.bands, window.width, window.height));
        };
        let px = raster::read_window_with(src, path, region, rule, alpha)?;
        if px.valid.iter().any(|&ok| ok) {
            let masked = masked_copy(src, &px, region)?;
            let method = self.resampling.gdal_name();
            warp_into(&masked, &dst, &["-r", method, "-q"]).with_context(|| {
                format!(
                    "{}: cannot resample window {window:?} onto the grid",
                    path.display()
                )
            })?;
        }
        raster::read_window(&dst, path, inside)
    }

    /// The pixels of `src` the warper reads for destination `dst`: the box around a lattice of
    /// `dst`'s points mapped into `src`, widened by the resampling kernel's reach, within `src`;
    /// `None` when `dst` lies outside `src`.
    fn source_region(&self, src: &Dataset, dst: &Dataset) -> Result<Option<Window>> {
        let transformer = PixelTransformer::new(src, dst)?;
        let (w, h) = dst.raster_size();
        let mut points = lattice(w as f64, h as f64, LATTICE);
        let ok = transformer.dst_to_src(&mut points);
        let inside: Vec<(f64, f64)> = points
            .into_iter()
            .zip(ok)
            .filter(|(p, ok)| *ok && p.0.is_finite() && p.1.is_finite())
            .map(|(p, _)| p)
            .collect();
        if inside.is_empty() {
            return Ok(None);
        }
        let (x0, x1, y0, y1) = bounds(&inside);
        let margin = (kernel_radius(self.resampling) + 1.0) * self.scale.max(1.0) + 1.0;
        let (sw, sh) = src.raster_size();
        let left = ((x0 - margin).floor().max(0.0) as usize).min(sw);
        let top = ((y0 - margin).floor().max(0.0) as usize).min(sh);
        let right = ((x1 + margin).ceil().max(0.0) as usize).min(sw);
        let bottom = ((y1 + margin).ceil().max(0.0) as usize).min(sh);
        Ok((right > left && bottom > top)
            .then(|| Window::new(left as i64, top as i64, right - left, bottom - top)))
    }
}

/// How many source pixels one grid pixel of `target` spans along a side: sqrt(source pixels /
/// area of the source's footprint in grid pixels), the footprint from GDAL's transformer along
/// the source's outline ([`footprint`]).
///
/// # Errors
/// When GDAL cannot relate the two, or the footprint misses the grid.
pub(crate) fn downsampling(src: &Dataset, target: &Target) -> Result<f64> {
    let dst = destination(target, (0, 0, target.width, target.height), 0)?;
    let transformer = PixelTransformer::new(src, &dst)?;
    let (w, h) = src.raster_size();
    let (ring, turned) = footprint(&transformer, (w, h), target)?;
    let (x0, x1, y0, y1) = bounds(&ring);
    let misses = x1 <= 0.0 || y1 <= 0.0 || x0 >= target.width as f64 || y0 >= target.height as f64;
    // A footprint moved by whole turns of longitude counts only where the warper, which maps the
    // grid's pixels into the file, finds the file there too.
    if misses || (turned && !reaches_source(&transformer, &ring, (w, h), target)) {
        bail!(
            "it does not overlap the grid: its footprint spans grid columns {x0:.0}..{x1:.0} \
             and rows {y0:.0}..{y1:.0}, the grid is {}x{} px",
            target.width,
            target.height
        );
    }
    let area = shoelace(&ring).max(1e-12);
    Ok(((w * h) as f64 / area).sqrt())
}

/// The outline of a `size` source in the grid's pixels, as GDAL's transformer maps it. GDAL
/// gives longitudes within ±180°, so on a geographic grid across the antimeridian (179°E to
/// 181°E, say) part of an outline lands a whole turn away; such points are moved by whole turns
/// (the grid's width of 360° in pixels) to keep the outline continuous and near the grid, as the
/// warper, which maps the grid into the file, sees it. Returns the outline and whether any point
/// was moved.
///
/// # Errors
/// When GDAL cannot transform three points of the outline.
fn footprint(
    transformer: &PixelTransformer,
    size: (usize, usize),
    target: &Target,
) -> Result<(Vec<(f64, f64)>, bool)> {
    let mut outline = outline_points(size.0 as f64, size.1 as f64, 16);
    let ok = transformer.src_to_dst(&mut outline);
    let mut ring: Vec<(f64, f64)> = outline
        .into_iter()
        .zip(ok)
        .filter(|(p, ok)| *ok && p.0.is_finite() && p.1.is_finite())
        .map(|(p, _)| p)
        .collect();
    if ring.len() < 3 {
        bail!("GDAL cannot transform its outline into the grid's pixels");
    }
    let Some(turn) = longitude_turn(target) else {
        return Ok((ring, false));
    };
    let before = ring.clone();
    for i in 1..ring.len() {
        let previous = ring[i - 1].0;
        ring[i].0 -= turn * ((ring[i].0 - previous) / turn).round();
    }
    let (x0, x1, _, _) = bounds(&ring);
    let centre = target.width as f64 / 2.0;
    let shift = turn * (((x0 + x1) / 2.0 - centre) / turn).round();
    for p in &mut ring {
        p.0 -= shift;
    }
    let turned = ring.iter().zip(&before).any(|(a, b)| a.0 != b.0);
    Ok((ring, turned))
}

/// One turn of longitude (360°) in pixels of a north-up grid in a geographic CRS; `None` for any
/// other grid.
fn longitude_turn(target: &Target) -> Option<f64> {
    let srs = SpatialRef::from_wkt(target.crs_wkt.as_deref()?).ok()?;
    let g = target.geo_transform;
    let radians_per_unit = srs.angular_units();
    let north_up = g[2] == 0.0 && g[4] == 0.0 && g[1] != 0.0;
    (srs.is_geographic() && north_up && radians_per_unit > 0.0)
        .then(|| std::f64::consts::TAU / radians_per_unit / g[1].abs())
}

/// Some point of the grid inside the footprint `ring` maps, through the warper's direction
/// (grid to file), into the file of `size`: a lattice over the part of the footprint's box
/// within the grid.
fn reaches_source(
    transformer: &PixelTransformer,
    ring: &[(f64, f64)],
    size: (usize, usize),
    target: &Target,
) -> bool {
    let (x0, x1, y0, y1) = bounds(ring);
    let (left, top) = (x0.max(0.0), y0.max(0.0));
    let right = x1.min(target.width as f64);
    let bottom = y1.min(target.height as f64);
    let mut points: Vec<(f64, f64)> = lattice(right - left, bottom - top, LATTICE)
        .into_iter()
        .map(|(x, y)| (x + left, y + top))
        .collect();
    let ok = transformer.dst_to_src(&mut points);
    let (w, h) = (size.0 as f64, size.1 as f64);
    points
        .iter()
        .zip(ok)
        .any(|(&(x, y), ok)| ok && (0.0..=w).contains(&x) && (0.0..=h).contains(&y))
}

/// An all-NaN destination of the `(x, y, w, h)` part of `target`: Float32 bands with NaN as
/// nodata, the grid's geotransform shifted to the corner, and its CRS. (The warper skips chunks
/// the file does not reach, so the NaN is written, not left to the driver's 0.)
fn destination(
    target: &Target,
    part: (usize, usize, usize, usize),
    bands: usize,
) -> Result<Dataset> {
    let (x, y, w, h) = part;
    let mem = DriverManager::get_driver_by_name("MEM").context("GDAL has no MEM driver")?;
    let mut ds = mem.create_with_band_type::<f32, _>("", w, h, bands)?;
    ds.set_geo_transform(&shifted(&target.geo_transform, x as f64, y as f64))?;
    if let Some(wkt) = &target.crs_wkt {
        // The geotransform's x is the first axis GIS software uses (longitude, easting), as in a
        // file GDAL reads; a CRS made from WKT would otherwise follow the authority's order
        // (latitude first for EPSG:4326) and swap the grid's axes.
        let mut srs = SpatialRef::from_wkt(wkt)?;
        srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        ds.set_spatial_ref(&srs)?;
    }
    for b in 1..=bands {
        let mut band = ds.rasterband(b)?;
        band.set_no_data_value(Some(f64::NAN))?;
        band.fill(f64::NAN, None)?;
    }
    Ok(ds)
}

/// `px`, read from `region` of `src`, as an in-memory raster placed where `region` lies (the
/// geotransform or GCPs of `src` shifted to the region's corner, its CRSs) with `px.valid` as
/// its per-dataset mask.
fn masked_copy(src: &Dataset, px: &Pixels, region: Window) -> Result<Dataset> {
    let (w, h) = (px.width, px.height);
    let mem = DriverManager::get_driver_by_name("MEM").context("GDAL has no MEM driver")?;
    let mut ds = mem.create_with_band_type::<f32, _>("", w, h, px.bands)?;
    let (dx, dy) = (region.x as f64, region.y as f64);
    if let Ok(gt) = src.geo_transform() {
        ds.set_geo_transform(&shifted(&gt, dx, dy))?;
    }
    if let Ok(srs) = src.spatial_ref() {
        ds.set_spatial_ref(&srs)?;
    }
    if !src.gcps().is_empty() {
        let gcps: Vec<Gcp> = src
            .gcps()
            .iter()
            .map(|g| {
                let mut g = Gcp::from(g);
                g.pixel -= dx;
                g.line -= dy;
                g
            })
            .collect();
        let srs = match src.gcp_spatial_ref() {
            Some(srs) => srs,
            None => SpatialRef::new()?,
        };
        ds.set_gcps(gcps, &srs)?;
    }
    for b in 0..px.bands {
        let mut band = ds.rasterband(b + 1)?;
        band.write(
            (0, 0),
            (w, h),
            &mut Buffer::new((w, h), px.band(b).to_vec()),
        )?;
    }
    let mut first = ds.rasterband(1)?;
    first.create_mask_band(true)?;
    let mut mask = first.open_mask_band()?;
    let bits: Vec<u8> = px
        .valid
        .iter()
        .map(|&ok| if ok { 255 } else { 0 })
        .collect();
    mask.write((0, 0), (w, h), &mut Buffer::new((w, h), bits))?;
    Ok(ds)
}

/// `gt` with its origin moved to pixel (`dx`, `dy`).
fn shifted(gt: &[f64; 6], dx: f64, dy: f64) -> [f64; 6] {
    [
        gt[0] + dx * gt[1] + dy * gt[2],
        gt[1],
        gt[2],
        gt[3] + dx * gt[4] + dy * gt[5],
        gt[4],
        gt[5],
    ]
}

/// How far, in source pixels at full resolution, a resampling's kernel reaches from a point.
fn kernel_radius(resampling: Resampling) -> f64 {
    match resampling {
        Resampling::Cubic | Resampling::CubicSpline => 2.0,
        Resampling::Lanczos => 3.0,
        _ => 1.0,
    }
}

/// A lattice of `n + 1` x `n + 1` points over a `w` x `h` raster, edges included.
fn lattice(w: f64, h: f64, n: usize) -> Vec<(f64, f64)> {
    let t = |i: usize| i as f64 / n as f64;
    (0..=n)
        .flat_map(|j| (0..=n).map(move |i| (w * t(i), h * t(j))))
        .collect()
}

/// `n` points along each side of a `w` x `h` raster's outline, in order around it.
fn outline_points(w: f64, h: f64, n: usize) -> Vec<(f64, f64)> {
    let t = |i: usize| i as f64 / n as f64;
    let mut ring = Vec::with_capacity(4 * n);
    ring.extend((0..n).map(|i| (w * t(i), 0.0)));
    ring.extend((0..n).map(|i| (w, h * t(i))));
    ring.extend((0..n).map(|i| (w * (1.0 - t(i)), h)));
    ring.extend((0..n).map(|i| (0.0, h * (1.0 - t(i)))));
    ring
}

/// Smallest and largest x, then y, of `points` (not empty).
fn bounds(points: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    points.iter().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    )
}

/// The area of a polygon given by its ring.
fn shoelace(ring: &[(f64, f64)]) -> f64 {
    let n = ring.len();
    let twice: f64 = (0..n)
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    twice.abs() / 2.0
}
