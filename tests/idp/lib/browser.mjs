// A minimal headless "browser" for the test IdP's pages: https with a given CA (node:https,
// no global state), a cookie jar, manual redirects, and a regex form reader that is enough
// for the pages this server renders (server.mjs and oidc-provider's form_post page).

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

export class Browser {
  constructor({ ca, timeoutMs = 15000, verbose = false } = {}) {
    this.ca = ca ? fs.readFileSync(ca) : undefined;
    this.timeoutMs = timeoutMs;
    this.verbose = verbose;
    this.cookies = []; // { name, value, host, path, expires (ms or Infinity) }
  }

  trace(...args) {
    if (this.verbose) process.stderr.write(`${args.join(' ')}\n`);
  }

  cookieHeader(url) {
    const now = Date.now();
    this.cookies = this.cookies.filter((c) => c.expires > now);
    return this.cookies
      .filter((c) => c.host === url.host && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  storeCookies(url, setCookie) {
    for (const line of setCookie || []) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let cpath = '/';
      let expires = Infinity;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.toLowerCase();
        if (key === 'path') cpath = v || '/';
        else if (key === 'max-age') expires = Date.now() + Number(v) * 1000;
        else if (key === 'expires' && expires === Infinity) expires = Date.parse(v);
      }
      this.cookies = this.cookies.filter((c) => !(c.name === name && c.path === cpath && c.host === url.host));
      if (expires > Date.now() && value !== '') this.cookies.push({ name, value, host: url.host, path: cpath, expires });
    }
  }

  // One request, no redirect following. Returns { status, headers, body, url }.
  request(urlStr, { method = 'GET', form } = {}) {
    const url = new URL(urlStr);
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const headers = { 'user-agent': 'qlam-auth-test-idp-browser', accept: 'text/html,application/json' };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const mod = url.protocol === 'https:' ? https : http;
    const options = { method, headers, timeout: this.timeoutMs };
    if (url.protocol === 'https:') options.ca = this.ca;
    this.trace(`> ${method} ${url.origin}${url.pathname}`);
    return new Promise((resolve, reject) => {
      const req = mod.request(url, options, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          this.storeCookies(url, res.headers['set-cookie']);
          this.trace(`< ${res.statusCode}${res.headers.location ? ` -> ${new URL(res.headers.location, url).pathname}` : ''}`);
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), url: url.href });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`timeout after ${this.timeoutMs} ms: ${method} ${url.origin}${url.pathname}`)));
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  // Follows redirects while `stay(url)` holds; returns the last response, or
  // { redirect: URL } when a redirect leaves (e.g. to a client's redirect_uri).
  async navigate(urlStr, opts = {}, stay = () => true) {
    let res = await this.request(urlStr, opts);
    for (let hops = 0; res.status >= 300 && res.status < 400 && res.headers.location; hops += 1) {
      if (hops > 20) throw new Error('too many redirects');
      const next = new URL(res.headers.location, res.url).href;
      if (!stay(next)) return { ...res, redirect: next };
      res = await this.request(next);
    }
    return res;
  }
}

const decode = (s) => s
  .replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)))
  .replace(/&#x([0-9a-f]+);/gi, (_, n) => String.fromCharCode(parseInt(n, 16)))
  .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

function attributes(tag) {
  const attrs = {};
  for (const m of tag.matchAll(/([\w.:-]+)\s*=\s*"([^"]*)"/g)) attrs[m[1].toLowerCase()] = decode(m[2]);
  return attrs;
}

// Forms of a page: [{ id, action, method, fields: {name: value}, inputs: [attrs] }].
export function forms(html, baseUrl) {
  const out = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributes(m[1]);
    const inputs = [...m[2].matchAll(/<input\b([^>]*)>/gi)].map((i) => attributes(i[1]));
    const fields = {};
    for (const i of inputs) if (i.name) fields[i.name] = i.value ?? '';
    out.push({
      id: attrs.id,
      action: new URL(attrs.action || baseUrl, baseUrl).href,
      method: (attrs.method || 'get').toUpperCase(),
      fields,
      inputs,
    });
  }
  return out;
}

// The text of the element with this id, if any.
export function textById(html, id) {
  const m = new RegExp(`<(\\w+)[^>]*\\bid="${id}"[^>]*>([\\s\\S]*?)</\\1>`, 'i').exec(html);
  return m ? decode(m[2].replace(/<[^>]+>/g, '')).trim() : undefined;
}
