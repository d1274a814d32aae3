// Zoom, pan and the distance measurement: the mapping between the canvas and
// the image's pixels, and lengths in millimetres from Pixel Spacing.

// the view of one image in a canvas: ``scale`` canvas pixels per image pixel
// (1 = the image fitted), and the offset of the image's centre
export class View {
  constructor() {
    this.reset();
  }

  reset() {
    this.zoom = 1; // relative to fitted
    this.panX = 0;
    this.panY = 0;
  }

  // canvas pixels per image pixel
  scaleFor(canvas, columns, rows) {
    const fit = Math.min(canvas.width / columns, canvas.height / rows);
    return fit * this.zoom;
  }

  // [a, b, c, d, e, f] for setTransform: image pixel -> canvas pixel
  transform(canvas, columns, rows) {
    const s = this.scaleFor(canvas, columns, rows);
    const x = canvas.width / 2 + this.panX - (columns * s) / 2;
    const y = canvas.height / 2 + this.panY - (rows * s) / 2;
    return [s, 0, 0, s, x, y];
  }

  toImage(canvas, columns, rows, cx, cy) {
    const [s, , , , x, y] = this.transform(canvas, columns, rows);
    return [(cx - x) / s, (cy - y) / s];
  }

  toCanvas(canvas, columns, rows, ix, iy) {
    const [s, , , , x, y] = this.transform(canvas, columns, rows);
    return [ix * s + x, iy * s + y];
  }

  zoomBy(factor) {
    this.zoom = Math.min(32, Math.max(0.1, this.zoom * factor));
    this.panX *= factor;
    this.panY *= factor;
  }

  panBy(dx, dy) {
    this.panX += dx;
    this.panY += dy;
  }
}

// the length between two image points: millimetres when the pixel spacing is
// known (PixelSpacing is row spacing, then column spacing: PS3.3 10.7.1.3)
export function distance(a, b, spacing) {
  const dx = b[0] - a[0], dy = b[1] - a[1];
  if (spacing) {
    const mm = Math.hypot(dx * spacing[1], dy * spacing[0]);
    return { value: mm, text: `${mm.toFixed(1)} mm` };
  }
  const px = Math.hypot(dx, dy);
  return { value: px, text: `${px.toFixed(1)} px (no pixel spacing)` };
}

// W/L drag: sideways widens, down raises the centre; faster for wide windows
export function dragWindow(window, dx, dy) {
  const step = Math.max(window.width / 256, 0.05);
  return {
    width: Math.max(1, window.width + dx * step),
    center: window.center + dy * step,
  };
}
