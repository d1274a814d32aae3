// Samples to pixels, in the browser: the modality LUT (Rescale Slope and
// Intercept), the VOI window (PS3.3 C.11.2.1.2, linear), MONOCHROME1
// inverted, colour drawn as it comes. A window change re-maps the frame
// already here: no request, a few milliseconds for 512x512.

// DICOM JSON (PS3.18 F.2): the first value of a tag, or all of them
export function value(dataset, tag, fallback = undefined) {
  const element = dataset && dataset[tag];
  if (!element || !element.Value || !element.Value.length) return fallback;
  const first = element.Value[0];
  return first && typeof first === "object" && "Alphabetic" in first ? first.Alphabetic : first;
}

export function values(dataset, tag) {
  const element = dataset && dataset[tag];
  return element && element.Value ? element.Value : [];
}

export const TAGS = {
  patientName: "00100010", patientId: "00100020", studyDate: "00080020",
  studyDescription: "00081030", studyUid: "0020000D", seriesUid: "0020000E",
  sopUid: "00080018", modality: "00080060", seriesNumber: "00200011",
  seriesDescription: "0008103E", instanceNumber: "00200013", frames: "00280008",
  rows: "00280010", columns: "00280011", samples: "00280002", photometric: "00280004",
  planar: "00280006", bitsAllocated: "00280100", bitsStored: "00280101",
  pixelRepresentation: "00280103", slope: "00281053", intercept: "00281052",
  windowCenter: "00281050", windowWidth: "00281051", pixelSpacing: "00280030",
  imagerPixelSpacing: "00181164", transferSyntax: "00083002", modalities: "00080061",
  numberOfInstances: "00201208", frameTime: "00181063", cineRate: "00180040",
};

// syntaxes whose decoder gives RGB for a YBR original (PS3.5 8.2.1, 8.2.4)
const DECODED_AS_RGB = /^1\.2\.840\.10008\.1\.2\.4\.(5\d|9\d|20\d)$/;

// What rendering needs of an instance's metadata (one object per instance).
export function imageInfo(dataset) {
  const photometric = String(value(dataset, TAGS.photometric, "MONOCHROME2")).trim();
  const syntax = String(value(dataset, TAGS.transferSyntax, "1.2.840.10008.1.2.1"));
  const spacing = values(dataset, TAGS.pixelSpacing).length
    ? values(dataset, TAGS.pixelSpacing) : values(dataset, TAGS.imagerPixelSpacing);
  return {
    rows: Number(value(dataset, TAGS.rows, 0)),
    columns: Number(value(dataset, TAGS.columns, 0)),
    samples: Number(value(dataset, TAGS.samples, 1)),
    photometric,
    // the node sends compressed colour decoded by pixel; native data as stored
    planar: Number(value(dataset, TAGS.planar, 0)) === 1 && !isCompressed(syntax),
    ybr: photometric.startsWith("YBR") && !DECODED_AS_RGB.test(syntax),
    bitsAllocated: Number(value(dataset, TAGS.bitsAllocated, 16)),
    bitsStored: Number(value(dataset, TAGS.bitsStored, value(dataset, TAGS.bitsAllocated, 16))),
    signed: Number(value(dataset, TAGS.pixelRepresentation, 0)) === 1,
    slope: Number(value(dataset, TAGS.slope, 1)) || 1,
    intercept: Number(value(dataset, TAGS.intercept, 0)) || 0,
    window: windowOf(dataset),
    spacing: spacing.length === 2 ? spacing.map(Number) : null,
    frames: Number(value(dataset, TAGS.frames, 1)) || 1,
    frameTime: Number(value(dataset, TAGS.frameTime, 0)) || 0,
  };
}

function isCompressed(syntax) {
  return !["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"].includes(syntax);
}

function windowOf(dataset) {
  const center = value(dataset, TAGS.windowCenter);
  const width = value(dataset, TAGS.windowWidth);
  if (center === undefined || width === undefined || Number(width) < 1) return null;
  return { center: Number(center), width: Number(width) };
}

export function isGrey(info) {
  return info.samples === 1 && info.photometric.startsWith("MONOCHROME");
}

// which images the browser draws itself; the others (PALETTE COLOR...) are
// shown as the node renders them
export function drawable(info) {
  return info.rows > 0 && info.columns > 0 &&
    ((isGrey(info) && [8, 16, 32].includes(info.bitsAllocated)) ||
     (info.samples === 3 && info.bitsAllocated === 8 && (info.photometric === "RGB" || info.photometric.startsWith("YBR"))));
}

// A frame's bytes as samples, and its range in modality units (for a window
// when the data set has none).
export function parseFrame(bytes, info) {
  const buffer = bytes.buffer;
  let samples;
  if (info.samples === 3 || info.bitsAllocated === 8) samples = bytes;
  else if (info.bitsAllocated === 16) samples = info.signed ? new Int16Array(buffer) : new Uint16Array(buffer);
  else samples = info.signed ? new Int32Array(buffer) : new Uint32Array(buffer);
  const frame = { samples, bytes: bytes.byteLength, min: 0, max: 255 };
  if (isGrey(info)) {
    let min = Infinity, max = -Infinity;
    const shift = 32 - info.bitsStored;
    for (let i = 0; i < samples.length; i++) {
      let v = samples[i];
      if (info.bitsStored < info.bitsAllocated) v = info.signed ? (v << shift) >> shift : v & ((1 << info.bitsStored) - 1);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const a = min * info.slope + info.intercept, b = max * info.slope + info.intercept;
    frame.min = Math.min(a, b);
    frame.max = Math.max(a, b);
  }
  return frame;
}

// the window to start with: the data set's, else the frame's own range
export function defaultWindow(info, frame) {
  if (info.window) return { ...info.window };
  if (!isGrey(info)) return { center: 127.5, width: 256 };
  return { center: (frame.min + frame.max) / 2, width: Math.max(1, frame.max - frame.min) };
}

function toByte(modalityValue, center, width) {
  // PS3.3 C.11.2.1.2.1, linear
  const y = ((modalityValue - (center - 0.5)) / (width - 1) + 0.5) * 255;
  return y <= 0 ? 0 : y >= 255 ? 255 : y | 0;
}

let lutCache = { key: "", lut: null };

// stored value -> grey level, for every pattern of 8 or 16 bits
function lutFor(info, window, invert) {
  const key = [info.bitsAllocated, info.bitsStored, info.signed, info.slope, info.intercept, window.center, window.width, invert].join();
  if (lutCache.key === key) return lutCache.lut;
  const size = 1 << info.bitsAllocated;
  const lut = new Uint8Array(size);
  const shift = 32 - info.bitsStored;
  const signedView = info.bitsAllocated === 16 ? new Int16Array(1) : new Int8Array(1);
  for (let pattern = 0; pattern < size; pattern++) {
    let v = pattern;
    if (info.signed) { signedView[0] = pattern; v = signedView[0]; }
    if (info.bitsStored < info.bitsAllocated) v = info.signed ? (v << shift) >> shift : v & ((1 << info.bitsStored) - 1);
    const grey = toByte(v * info.slope + info.intercept, window.center, window.width);
    lut[pattern] = invert ? 255 - grey : grey;
  }
  lutCache = { key, lut };
  return lut;
}

// the frame as RGBA into ``image`` (an ImageData of the frame's size)
export function renderInto(image, frame, info, window, { invert = false } = {}) {
  const out = new Uint32Array(image.data.buffer);
  const pixels = info.rows * info.columns;
  const inverted = invert !== (info.photometric === "MONOCHROME1");
  const s = frame.samples;
  if (isGrey(info) && info.bitsAllocated <= 16) {
    const lut = lutFor(info, window, inverted);
    const mask = (1 << info.bitsAllocated) - 1;
    for (let i = 0; i < pixels; i++) {
      const g = lut[s[i] & mask];
      out[i] = 0xff000000 | (g << 16) | (g << 8) | g; // little-endian RGBA
    }
  } else if (isGrey(info)) {
    for (let i = 0; i < pixels; i++) {
      let g = toByte(s[i] * info.slope + info.intercept, window.center, window.width);
      if (inverted) g = 255 - g;
      out[i] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
  } else {
    const plane = info.planar ? pixels : 1;
    for (let i = 0; i < pixels; i++) {
      const o = info.planar ? i : i * 3;
      let r = s[o], g = s[o + plane], b = s[o + 2 * plane];
      if (info.ybr) {
        const y = r, cb = g - 128, cr = b - 128;
        r = clamp(y + 1.402 * cr); g = clamp(y - 0.344136 * cb - 0.714136 * cr); b = clamp(y + 1.772 * cb);
      }
      if (invert) { r = 255 - r; g = 255 - g; b = 255 - b; }
      out[i] = 0xff000000 | (b << 16) | (g << 8) | r;
    }
  }
  return image;
}

function clamp(v) {
  return v < 0 ? 0 : v > 255 ? 255 : v | 0;
}
