"""Where a kidney cannot be: checks of a predicted kidney component against the CT around it.

A kidney lies deep in the retroperitoneum, wrapped in perirenal fat and soft tissue. A network
trained on synthetic CT still labels structures elsewhere as kidney (docs/pretrained.md): a
patch on the table pad outside the body, the wall of a contrast-filled heart. Post-processing
drops a component of the kidney + masses region when the CT around it says it is one of these:

- **Too small**: under `MIN_KIDNEY_ML`, the least stage 1 of kidney-focused prediction takes for a
  kidney (`kidneyseg.predict.roi`); left out silently, as the two-largest rule leaves out fragments.
- **No kidney in it**: a component of tumor or cyst alone, or with less kidney in it than
  `MIN_KIDNEY_ML`. A renal mass lies in or on a kidney (the report cannot place it otherwise); a
  few kidney voxels do not make one (a phantom with its kidneys painted over as fat: a 6.7 mL
  "cyst" holding 0.2 mL of "kidney").
- **At the body surface**: half of its voxels lie closer than `MIN_DEPTH_MM` to the air outside
  the body (air connected to the slice's edge, so bowel gas and enclosed lungs do not count). A
  kidney lies behind the muscles of the back and flank, its surface several centimetres under
  the skin even in thin adults, so half of it lies deeper still: the median depth of the
  kidneys' voxels is 50-89 mm on the demo's 30 phantoms and 64-76 mm on the real low-dose CT. An
  arm, a skin fold or the table pad lies within a few centimetres of the air around the body.
- **Inside a blood pool or bone**: at least `MAX_DENSE_FRACTION` of the shell `SHELL_MM` thick
  around it is denser than `DENSE_HU` (contrast-filled blood, bone). Around a kidney that shell
  is fat and soft tissue (at most 0.05 on the phantoms, 0.00 on the low-dose CT); the renal pelvis
  full of excreted contrast takes an estimated 0.10-0.15 of it in an excretory phase.
- **Fat or air**: the median of its kidney voxels is below `FAT_HU`. Kidney parenchyma reads
  20-250 HU from unenhanced to arterial phase, fat -150 to -50 HU (docs/phantom.md, "HU values
  and their sources"); its masses are left out of the median, since a renal mass may be fat (an
  angiomyolipoma) or a large cyst. A network that has learned where kidneys lie from the structures
  around them labels the fat of an empty renal fossa kidney (a phantom with its kidneys painted
  over as fat: 340 mL "kidney" of median -100 HU).

How the thresholds were set, and what they do on the shared real CTs: docs/prediction.md, "Where a
kidney cannot be".
"""

from __future__ import annotations

import numpy as np

from kidneyseg.predict.roi import MIN_KIDNEY_ML

MIN_DEPTH_MM = 25.0
FAT_HU = -50.0
SHELL_MM = 5.0
DENSE_HU = 300.0
MAX_DENSE_FRACTION = 0.3
GRID_MM = 3.0
"""The checks run on the CT subsampled to about this spacing (the networks' grid), every
`GRID_MM // spacing`-th voxel along each axis: depths and fractions at a few millimetres need no
finer grid, and a whole-CT prediction stays fast."""
MAX_CHECKED = 10
"""At most this many components, the largest first, are checked; smaller ones are dropped as by
the two-largest rule."""


class AnatomyCheck:
    """Checks components of a label map on `ct`'s grid (Hounsfield units).

    Args:
        ct: the CT, on the label map's grid.
        spacing: mm per voxel along each axis.
        axial_axis: the array axis across axial slices (`report.geometry.slice_axis`).
        air_hu: below this a voxel is air (the body threshold of preprocessing).
        kidney: the kidney's value in the label map.
    """

    def __init__(
        self, ct: np.ndarray, spacing: tuple[float, ...], axial_axis: int, air_hu: float, kidney: int
    ):
        self.voxel_ml = float(np.prod(spacing)) / 1000.0
        self.min_voxels = MIN_KIDNEY_ML / self.voxel_ml
        self.stride = tuple(max(1, int(GRID_MM // s)) for s in spacing)
        self.ct = ct[tuple(slice(None, None, k) for k in self.stride)]
        self.spacing = tuple(float(s) * k for s, k in zip(spacing, self.stride, strict=True))
        self.axial_axis = axial_axis
        self.air_hu = air_hu
        self.kidney = kidney
        self._outside: dict[int, np.ndarray] = {}

    def outside_air(self, index: int) -> np.ndarray:
        """The air outside the body on axial slice `index` of the subsampled CT: air connected
        to the slice's edge."""
        if index not in self._outside:
            from scipy import ndimage

            axial = tuple(index if a == self.axial_axis else slice(None) for a in range(3))
            self._outside[index] = ~ndimage.binary_fill_holes(self.ct[axial] >= self.air_hu)
        return self._outside[index]

    def reason(self, mask: np.ndarray, labels: np.ndarray, box: tuple[slice, ...]) -> str | None:
        """Why the component `mask` (within `box` of the CT; `labels` the label map there) cannot
        be a kidney, or None when nothing says so."""
        from scipy import ndimage

        kidney = int(np.count_nonzero(labels[mask] == self.kidney))
        if kidney == 0:
            return "no kidney voxel in it (a renal mass lies in or on a kidney)"
        if kidney < self.min_voxels:
            return (
                f"no kidney in it: {kidney * self.voxel_ml:.1f} mL of kidney voxels, under the "
                f"{MIN_KIDNEY_ML:g} mL taken for a kidney (a renal mass lies in or on a kidney)"
            )
        # The component on the subsampled grid: the grid points -(-start // k) .. inside the box.
        first = [-(-b.start // k) for b, k in zip(box, self.stride, strict=True)]
        coarse = tuple(
            slice(f * k - b.start, None, k) for f, b, k in zip(first, box, self.stride, strict=True)
        )
        mask = mask[coarse]
        if not mask.any():
            return None
        at = tuple(slice(f, f + m) for f, m in zip(first, mask.shape, strict=True))  # in self.ct
        reach = [int(np.ceil(max(MIN_DEPTH_MM, SHELL_MM) / s)) for s in self.spacing]
        grown = tuple(
            slice(max(a.start - r, 0), min(a.stop + r, n))
            for a, r, n in zip(at, reach, self.ct.shape, strict=True)
        )
        component = np.zeros(tuple(g.stop - g.start for g in grown), dtype=bool)
        component[
            tuple(slice(a.start - g.start, a.stop - g.start) for a, g in zip(at, grown, strict=True))
        ] = mask

        shell = ~component & (ndimage.distance_transform_edt(~component, sampling=self.spacing) <= SHELL_MM)
        dense = float(np.mean(self.ct[grown][shell] > DENSE_HU)) if shell.any() else 0.0
        if dense >= MAX_DENSE_FRACTION:
            return (
                f"{dense:.0%} of the {SHELL_MM:g} mm around it is denser than {DENSE_HU:g} HU "
                "(inside a blood pool or bone)"
            )

        axis = self.axial_axis
        in_plane = tuple(g for a, g in enumerate(grown) if a != axis)
        outside = np.stack(
            [self.outside_air(k)[in_plane] for k in range(grown[axis].start, grown[axis].stop)], axis=axis
        )
        if outside.any():
            depth = ndimage.distance_transform_edt(~outside, sampling=self.spacing)
            median = float(np.median(depth[component]))
            if median < MIN_DEPTH_MM:
                return f"half of it lies within {median:.0f} mm of the air outside the body (at its surface)"
        kidney = mask & (labels[coarse] == self.kidney)
        if kidney.any():
            median_hu = float(np.median(self.ct[at][kidney]))
            if median_hu < FAT_HU:
                return (
                    f"the median of its kidney voxels is {median_hu:.0f} HU, below {FAT_HU:g} HU "
                    "(fat or air, not kidney)"
                )
        return None
