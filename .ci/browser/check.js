// The built book read in a real browser (Debian's Chromium, driven by playwright-core).
//
// For every page of target/book at 1280 and 420 px: no console or page error, no failed
// request, every image loaded, no sideways scrolling of the whole page, diagram text at least
// MIN_FONT_PX as rendered; every internal link leads to an existing file and every #anchor to
// an element of its page; the offline search finds each of SEARCH_TERMS; draft chapters in the
// sidebar carry a "coming" label with at least MIN_CONTRAST in every theme. Screenshots of
// every page at both widths land in target/browser-check/ for people to look at.
//
// Pages are opened as file:// URLs, as `cargo workbook book --open` opens them, because that
// is the strictest way to read the book (no fetch(), no server to paper over a bad path).
// The one exception is 404.html: only `cargo workbook serve` shows it, under <base href="/">,
// so it is read from a small static server standing in for that one case.
//
// Usage: node check.js [book-dir] [screenshot-dir]   (run by .ci/run from the project root)
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { pathToFileURL, fileURLToPath } = require('node:url');
const { chromium } = require('playwright-core');

const BOOK = path.resolve(process.argv[2] || 'target/book');
const OUT = path.resolve(process.argv[3] || 'target/browser-check');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WIDTHS = [1280, 420];
const HEIGHT = 900;
// Present in the written chapters: a kernel word, a Go runtime field, a general word.
const SEARCH_TERMS = ['futex', 'runnext', 'stack'];
const MIN_FONT_PX = 10;
const MIN_CONTRAST = 4.5;
const THEMES = ['light', 'rust', 'coal', 'navy', 'ayu'];
// The network is closed and must stay unused: without these Chromium keeps calling home.
const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

function pagesOfBook() {
  if (!fs.existsSync(path.join(BOOK, 'index.html'))) {
    throw new Error(`no ${BOOK}/index.html: build the book first (cargo workbook book)`);
  }
  return fs
    .readdirSync(BOOK)
    .filter((f) => f.endsWith('.html'))
    .sort();
}

// ---- Colours and contrast (WCAG 2 relative luminance) --------------------------------------

function parseColor(css) {
  const m = css.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const parts = m[1]
    .split(/[\s,/]+/)
    .filter(Boolean)
    .map(Number);
  return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
}

function over(top, bottom) {
  const a = top.a + bottom.a * (1 - top.a);
  const mix = (t, b) => (t * top.a + b * bottom.a * (1 - top.a)) / (a || 1);
  return { r: mix(top.r, bottom.r), g: mix(top.g, bottom.g), b: mix(top.b, bottom.b), a };
}

function luminance({ r, g, b }) {
  const lin = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

function contrast(fg, bg) {
  const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

// ---- SVG files: the smallest text they draw, in their own user units -----------------------

const svgCache = new Map();
function svgFacts(file) {
  if (svgCache.has(file)) return svgCache.get(file);
  // A missing file is reported once already, as an image that did not load.
  if (!fs.existsSync(file)) return { missing: true };
  const text = fs.readFileSync(file, 'utf8');
  const root = text.match(/<svg\b[^>]*>/);
  let facts = { error: 'no <svg> element' };
  if (root) {
    const vb = root[0].match(/viewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)[\s,]+([\d.]+)/);
    const w = root[0].match(/\bwidth="([\d.]+)(px)?"/);
    const h = root[0].match(/\bheight="([\d.]+)(px)?"/);
    const width = vb ? Number(vb[1]) : w && Number(w[1]);
    const height = vb ? Number(vb[2]) : h && Number(h[1]);
    // font-size as an attribute or in a style; 16 is what an SVG draws with none at all.
    const sizes = [...text.matchAll(/font-size\s*(?:=\s*"|:\s*)([\d.]+)(px)?/g)].map((m) =>
      Number(m[1]),
    );
    facts =
      width && height
        ? { width, height, minFont: sizes.length ? Math.min(...sizes) : 16 }
        : { error: 'neither a viewBox nor width and height on <svg>' };
  }
  svgCache.set(file, facts);
  return facts;
}

// ---- Links ----------------------------------------------------------------------------------

// The file a link points at, or null for a link that leaves the book's machine (http, mailto).
function targetFile(href, serverOrigin) {
  const url = new URL(href);
  let file;
  if (url.protocol === 'file:') file = fileURLToPath(url);
  else if (serverOrigin && url.origin === serverOrigin)
    file = path.join(BOOK, decodeURIComponent(url.pathname));
  else return null;
  if (file.endsWith(path.sep) || (fs.existsSync(file) && fs.statSync(file).isDirectory())) {
    file = path.join(file, 'index.html');
  }
  return { file, anchor: url.hash ? decodeURIComponent(url.hash.slice(1)) : '' };
}

// ---- One page at one width ------------------------------------------------------------------

async function readPage(page, url, name, width, record) {
  const where = `${name} @${width}px`;
  const errors = [];
  const onConsole = (msg) => {
    // The 404 page is, rightly, served with status 404: Chromium logs that for the page itself.
    const itsOwnStatus = name === '404.html' && msg.location().url === url;
    if (msg.type() === 'error' && !itsOwnStatus) errors.push(`console error: ${msg.text()}`);
  };
  const onPageError = (err) => errors.push(`page error: ${err.message}`);
  const onFailed = (req) => {
    const why = req.failure()?.errorText || '';
    // ERR_ABORTED is a request cut off by the next navigation (a favicon), not a missing file.
    if (!why.includes('ERR_ABORTED')) errors.push(`request failed: ${req.url()} (${why})`);
  };
  page.on('console', onConsole);
  page.on('pageerror', onPageError);
  page.on('requestfailed', onFailed);
  try {
    await page.goto(url, { waitUntil: 'load', timeout: 20000 });
    await page.evaluate(() => document.fonts.ready);

    const facts = await page.evaluate(() => {
      const imgs = [...document.images].map((img) => {
        const r = img.getBoundingClientRect();
        const style = getComputedStyle(img);
        // The content box is what the picture is drawn into: without padding and border.
        const edges = (a, b) =>
          ['padding', 'border'].reduce((sum, k) => {
            const w = k === 'border' ? 'Width' : '';
            return sum + parseFloat(style[`${k}${a}${w}`]) + parseFloat(style[`${k}${b}${w}`]);
          }, 0);
        return {
          src: img.currentSrc || img.src,
          complete: img.complete,
          naturalWidth: img.naturalWidth,
          shown: r.width > 0 && r.height > 0 && style.visibility !== 'hidden',
          boxWidth: r.width - edges('Left', 'Right'),
          boxHeight: r.height - edges('Top', 'Bottom'),
        };
      });
      // Text of inline <svg>s (none today; mdBook's icons carry no text) as rendered.
      const inlineSvgText = [...document.querySelectorAll('svg text')]
        .filter((t) => t.getBoundingClientRect().width > 0)
        .map((t) => {
          const m = t.getScreenCTM();
          const scale = Math.sqrt(Math.abs(m.a * m.d - m.b * m.c));
          return parseFloat(getComputedStyle(t).fontSize) * scale;
        });
      const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
      const names = [...document.querySelectorAll('a[name]')].map((e) => e.getAttribute('name'));
      const links = [...document.querySelectorAll('a[href]')].map((a) => a.href);
      const doc = document.documentElement;
      return {
        imgs,
        inlineSvgText,
        ids: ids.concat(names),
        links,
        scrollWidth: doc.scrollWidth,
        clientWidth: doc.clientWidth,
      };
    });

    for (const img of facts.imgs) {
      const short = img.src.replace(/^.*\//, '');
      if (!img.complete || img.naturalWidth === 0)
        problem(where, `image ${short} did not load (naturalWidth 0)`);
      if (!img.shown || !img.src.endsWith('.svg')) continue;
      const file = targetFile(img.src, record.serverOrigin);
      if (!file) continue;
      const svg = svgFacts(file.file);
      if (svg.missing) continue;
      if (svg.error) {
        problem(where, `image ${short}: ${svg.error}`);
        continue;
      }
      const scale = Math.min(img.boxWidth / svg.width, img.boxHeight / svg.height);
      const px = svg.minFont * scale;
      record.minSvgPx[width] = Math.min(record.minSvgPx[width] ?? Infinity, px);
      if (px < MIN_FONT_PX) {
        problem(
          where,
          `diagram ${short}: its smallest text (${svg.minFont} units) is drawn at ` +
            `${px.toFixed(1)} px, under ${MIN_FONT_PX} px ` +
            `(shown ${img.boxWidth.toFixed(0)} px wide for a ${svg.width}-unit viewBox)`,
        );
      }
    }
    for (const px of facts.inlineSvgText) {
      if (px < MIN_FONT_PX)
        problem(where, `inline SVG text drawn at ${px.toFixed(1)} px, under ${MIN_FONT_PX} px`);
    }
    if (facts.scrollWidth > facts.clientWidth + 1) {
      problem(
        where,
        `the whole page scrolls sideways (${facts.scrollWidth} px of content in ${facts.clientWidth} px)`,
      );
    }
    record.ids.set(record.fileOf(url), new Set(facts.ids));
    for (const href of facts.links) record.links.push({ from: where, href });

    // print.html repeats every chapter on one page: 15 MB of PNG that shows nothing new.
    if (name !== 'print.html') {
      const shot = path.join(OUT, `${name.replace(/\.html$/, '')}-${width}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      record.screenshots++;
      if (name !== '404.html') await checkZoom(page, name, width, record);
    }
  } catch (e) {
    problem(where, `could not be read: ${e.message.split('\n')[0]}`);
  }
  // Let late errors (a script that fails after load) arrive before we stop listening.
  await page.waitForTimeout(50);
  page.off('console', onConsole);
  page.off('pageerror', onPageError);
  page.off('requestfailed', onFailed);
  for (const e of errors) problem(where, e);
}

// Tap the first diagram of a page: the zoomed view must not shrink its text either.
async function checkZoom(page, name, width, record) {
  const where = `${name} @${width}px, diagram tapped open`;
  const label = page.locator('.content .checkbox-label:has(> img[src$=".svg"])').first();
  if ((await label.count()) === 0) return;
  await label.locator('> img').click();
  const zoomed = label.locator('.img-wrapper > img');
  await zoomed.waitFor({ state: 'visible', timeout: 3000 }).catch(() => {});
  const box = await zoomed.evaluate((img) => {
    const r = img.getBoundingClientRect();
    const s = getComputedStyle(img);
    return {
      src: img.currentSrc || img.src,
      w: r.width - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight),
      h: r.height - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom),
    };
  });
  if (!box.w) {
    problem(where, 'tapping the diagram opened no zoomed view');
    return;
  }
  const svg = svgFacts(targetFile(box.src, record.serverOrigin).file);
  if (svg.missing || svg.error) return;
  const px = svg.minFont * Math.min(box.w / svg.width, box.h / svg.height);
  record.zoomPx[width] = Math.min(record.zoomPx[width] ?? Infinity, px);
  if (px < MIN_FONT_PX)
    problem(where, `smallest text drawn at ${px.toFixed(1)} px, under ${MIN_FONT_PX} px`);
  await page.screenshot({
    path: path.join(OUT, `${name.replace(/\.html$/, '')}-${width}-zoomed.png`),
  });
  record.screenshots++;
  await zoomed.click(); // and closed again
}

async function checkSearch(page, url, width, record) {
  await page.goto(url, { waitUntil: 'load' });
  await page.click('#mdbook-search-toggle');
  for (const term of SEARCH_TERMS) {
    const where = `search for "${term}" @${width}px`;
    try {
      await page.fill('#mdbook-searchbar', '');
      // Typed key by key: mdBook searches on keyup, which fill() does not send.
      await page.locator('#mdbook-searchbar').pressSequentially(term);
      // The header names the term searched for: results of the term before do not count.
      await page.waitForFunction(
        (t) => document.getElementById('mdbook-searchresults-header').textContent.includes(t),
        term,
        { timeout: 5000 },
      );
      const results = page.locator('#mdbook-searchresults > li');
      await results.first().waitFor({ state: 'visible', timeout: 5000 });
      const n = await results.count();
      record.search.push(`${term} ${n} @${width}`);
      // Search results are links like any other: their pages and anchors must exist.
      for (const href of await page
        .locator('#mdbook-searchresults a')
        .evaluateAll((as) => as.map((a) => a.href))) {
        record.links.push({ from: where, href });
      }
    } catch (e) {
      problem(where, `no results (${e.message.split('\n')[0]})`);
    }
  }
}

// Draft chapters (SUMMARY.md entries with "()") in the sidebar, in every theme.
async function checkDrafts(page, url, record) {
  await page.goto(url, { waitUntil: 'load' });
  for (const theme of THEMES) {
    const where = `sidebar drafts, theme ${theme}`;
    const drafts = await page.evaluate((theme) => {
      const html = document.documentElement;
      for (const c of [...html.classList])
        if (/^(light|rust|coal|navy|ayu)$/.test(c)) html.classList.remove(c);
      html.classList.add(theme);
      // Colours an element is painted on: its own background and every ancestor's, top first.
      const backgrounds = (el) => {
        const out = [];
        for (let e = el; e; e = e.parentElement) out.push(getComputedStyle(e).backgroundColor);
        return out;
      };
      return [...document.querySelectorAll('.chapter li > .chapter-link-wrapper > span')].map(
        (span) => {
          const after = getComputedStyle(span, '::after');
          return {
            text: span.textContent.trim(),
            color: getComputedStyle(span).color,
            label: after.content,
            labelColor: after.color,
            labelBackground: after.backgroundColor,
            labelDisplay: after.display,
            labelFontSize: after.fontSize,
            backgrounds: backgrounds(span),
          };
        },
      );
    }, theme);
    record.drafts = drafts.length;
    // One line per theme and kind of fault, not one per draft: they share one rule.
    const faults = new Map();
    const fault = (kind, d, detail) => {
      if (!faults.has(kind)) faults.set(kind, { first: `"${d.text}" ${detail}`, n: 0 });
      faults.get(kind).n++;
    };
    for (const d of drafts) {
      // Composite the ancestors' backgrounds from the page (white) up to the span.
      let bg = { r: 255, g: 255, b: 255, a: 1 };
      for (const css of d.backgrounds.slice().reverse())
        bg = over(parseColor(css) || { r: 0, g: 0, b: 0, a: 0 }, bg);
      const labelBg = over(parseColor(d.labelBackground) || { r: 0, g: 0, b: 0, a: 0 }, bg);
      const text = contrast(parseColor(d.color), bg);
      const label = contrast(parseColor(d.labelColor), labelBg);
      record.minContrast = Math.min(record.minContrast, text, label);
      if (
        !/coming/i.test(d.label) ||
        d.labelDisplay === 'none' ||
        parseFloat(d.labelFontSize) === 0
      ) {
        fault('no visible "coming" label', d, `(::after content: ${d.label})`);
      }
      if (text < MIN_CONTRAST)
        fault(`text contrast under ${MIN_CONTRAST}:1`, d, `${d.color}: ${text.toFixed(2)}:1`);
      if (label < MIN_CONTRAST)
        fault(
          `label contrast under ${MIN_CONTRAST}:1`,
          d,
          `${d.labelColor}: ${label.toFixed(2)}:1`,
        );
    }
    for (const [kind, { first, n }] of faults) {
      problem(where, `${kind} on ${n} of ${drafts.length} drafts, first ${first}`);
    }
  }
}

// Stands in for `cargo workbook serve` for 404.html: every path answers with that page.
function notFoundServer() {
  const types = {
    '.html': 'text/html',
    '.css': 'text/css',
    '.js': 'text/javascript',
    '.svg': 'image/svg+xml',
    '.png': 'image/png',
    '.woff2': 'font/woff2',
    '.json': 'application/json',
  };
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = path.join(BOOK, rel);
    let status = 200;
    if (!file.startsWith(BOOK) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      file = path.join(BOOK, '404.html');
      status = 404;
    }
    res.writeHead(status, {
      'content-type': types[path.extname(file)] || 'application/octet-stream',
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const started = Date.now();
  const pages = pagesOfBook();
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  if (!fs.existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);

  const server = pages.includes('404.html') ? await notFoundServer() : null;
  const serverOrigin = server ? `http://127.0.0.1:${server.address().port}` : null;
  const urlOf = (name) =>
    name === '404.html'
      ? `${serverOrigin}/no/such/page.html`
      : pathToFileURL(path.join(BOOK, name)).href;
  const record = {
    serverOrigin,
    fileOf: (url) => (url.startsWith('file:') ? fileURLToPath(url) : path.join(BOOK, '404.html')),
    ids: new Map(),
    links: [],
    search: [],
    minSvgPx: {},
    zoomPx: {},
    drafts: 0,
    minContrast: Infinity,
    screenshots: 0,
    phases: [],
  };

  const args = [...CHROMIUM_ARGS];
  // Chromium refuses to run its sandbox as root (CI containers run as root).
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  // One width per browser context, both at once: most of the time is Chromium rendering
  // and encoding PNGs, which a second core does in parallel.
  const atWidth = async (width) => {
    const context = await browser.newContext({
      viewport: { width, height: HEIGHT },
      colorScheme: 'light',
    });
    const page = await context.newPage();
    let t = Date.now();
    const phase = (what) => {
      record.phases.push(`${what} @${width} ${((Date.now() - t) / 1000).toFixed(1)} s`);
      t = Date.now();
    };
    for (const name of pages) await readPage(page, urlOf(name), name, width, record);
    phase('pages (with a diagram tapped open)');
    await checkSearch(page, urlOf('index.html'), width, record);
    phase('search');
    if (width === WIDTHS[0]) {
      await checkDrafts(page, urlOf('index.html'), record);
      phase('drafts');
    }
    await context.close();
  };
  try {
    await Promise.all(WIDTHS.map(atWidth));
  } finally {
    await browser.close();
    if (server) server.close();
  }

  // Links, once the ids of every page are known. Same href from many pages: check once each.
  let linksChecked = 0;
  let anchorsChecked = 0;
  let external = 0;
  const seen = new Set();
  for (const { from, href } of record.links) {
    if (seen.has(href)) continue;
    seen.add(href);
    const target = targetFile(href, serverOrigin);
    if (!target) {
      external++;
      continue;
    }
    linksChecked++;
    const shown = path.relative(BOOK, target.file);
    if (!fs.existsSync(target.file)) {
      problem(from, `link ${href} leads to ${shown}, which does not exist`);
      continue;
    }
    if (!target.anchor) continue;
    anchorsChecked++;
    const ids = record.ids.get(target.file);
    if (!ids)
      problem(
        from,
        `link ${href}: anchor #${target.anchor} on ${shown}, a page this check did not read`,
      );
    else if (!ids.has(target.anchor))
      problem(from, `link ${href}: no element with id "${target.anchor}" on ${shown}`);
  }

  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const fmt = (o) =>
    Object.entries(o)
      .map(([w, px]) => `${px.toFixed(1)} px @${w}`)
      .join(', ');
  console.log(
    `pages: ${pages.length} at ${WIDTHS.join(' and ')} px; screenshots: ${record.screenshots} in ${path.relative(process.cwd(), OUT) || OUT}`,
  );
  console.log(
    `links: ${linksChecked} distinct internal checked (${anchorsChecked} with an #anchor), ${external} external not followed`,
  );
  console.log(`search: ${record.search.join(', ')}`);
  console.log(
    `smallest diagram text: ${fmt(record.minSvgPx)}; tapped open: ${fmt(record.zoomPx)} (minimum ${MIN_FONT_PX} px)`,
  );
  console.log(
    `drafts in the sidebar: ${record.drafts}, lowest contrast over ${THEMES.length} themes ${record.drafts ? record.minContrast.toFixed(2) : '-'}:1 (minimum ${MIN_CONTRAST}:1)`,
  );
  console.log(`time: ${secs} s (${record.phases.join(', ')})`);
  if (problems.length) {
    const distinct = [...new Set(problems)];
    console.error(`\nbrowser check FAILED, ${distinct.length} problem(s):`);
    for (const p of distinct) console.error(`  ${p}`);
    process.exit(1);
  }
  console.log('browser check passed');
}

main().catch((e) => {
  console.error(`browser check could not run: ${e.message}`);
  process.exit(1);
});
