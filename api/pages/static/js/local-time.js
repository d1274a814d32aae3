// Times in the reader's own time zone: the server writes ISO 8601 timestamps
// (UTC) into <time datetime="..." data-local>; this module rewrites their text
// with the browser's locale and time zone, and names the zone wherever a page
// has a [data-time-zone] element. Without JavaScript the UTC text stays.
const format = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
});

export function localize(root = document) {
  for (const element of root.querySelectorAll("time[data-local]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(moment.getTime())) {
      element.textContent = format.format(moment);
    }
  }
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const element of root.querySelectorAll("[data-time-zone]")) {
    element.textContent = zone ? ` (${zone})` : "";
  }
}

localize();
