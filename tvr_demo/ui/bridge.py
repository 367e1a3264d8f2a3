"""Browser-side glue for the embedding map: gr.Plot has no click event, so a small gr.HTML component listens to
plotly's own events and forwards them to Python (click -> open in the explain view, lasso -> selection table,
hover on a video -> its thumbnail, fetched through a server function)."""

MAP_ELEM_ID = "embedding-map"

MAP_BRIDGE_JS = """
const tip = document.createElement('div');
tip.id = 'tvr-map-thumbnail';
tip.style.cssText = 'position:fixed;pointer-events:none;z-index:1000;display:none;background:#fff;' +
  'border:1px solid #888;border-radius:4px;padding:2px';
document.body.appendChild(tip);
let hovered = null;
const onClick = (ev) => {
  const p = ev && ev.points && ev.points[0];
  if (p && p.customdata) trigger('click', {kind: p.customdata[0], index: p.customdata[1]});
};
const onSelected = (ev) => {
  if (!ev || !ev.points) return;
  const items = ev.points.filter((p) => p.customdata).map((p) => [p.customdata[0], p.customdata[1]]);
  trigger('input', {items: items});
};
const onHover = async (ev) => {
  const p = ev && ev.points && ev.points[0];
  if (!p || !p.customdata || p.customdata[0] !== 'video') return;
  hovered = p.customdata[1];
  const uri = await server.thumbnail([p.customdata[2], p.customdata[1]]);
  if (!uri || hovered !== p.customdata[1]) return;
  tip.innerHTML = '<img alt="thumbnail" style="display:block;height:96px" src="' + uri + '">';
  tip.style.left = (ev.event.clientX + 16) + 'px';
  tip.style.top = (ev.event.clientY + 16) + 'px';
  tip.style.display = 'block';
};
const onUnhover = () => { hovered = null; tip.style.display = 'none'; };
const handlers = {plotly_click: onClick, plotly_selected: onSelected, plotly_hover: onHover, plotly_unhover: onUnhover};
setInterval(() => {
  const gd = document.querySelector('#MAP_ELEM_ID .js-plotly-plot');
  if (!gd || typeof gd.on !== 'function') return;
  for (const [name, fn] of Object.entries(handlers)) {  // re-attached each tick: a redraw may drop listeners
    gd.removeListener(name, fn);
    gd.on(name, fn);
  }
}, 700);
""".replace("MAP_ELEM_ID", MAP_ELEM_ID)
