// Headless browser for an authorization-code request: opens AUTHORIZATION_URL, signs in on
// the login form, lets the IdP's automatic consent run, then performs the final GET to the
// redirect URI (the loopback listener of the client under test) and prints that URL.
//
//   node authorize.mjs --ca CA --user alice --password alice-pw --url AUTHORIZATION_URL \
//     [--deny] [--verbose]
//
// --deny presses "Cancel" on the login page: the client gets error=access_denied.
// Exit 0: the redirect carried a code and the listener answered below 400.
// Exit 1: the IdP refused (e.g. wrong password, bad request) before redirecting.
// Exit 3: redirected with an error (printed), or the listener answered >= 400 / not at all.
// Exit 2: bad usage.

import { parseArgs } from 'node:util';

import { Browser, forms, textById } from './lib/browser.mjs';

const usage = 'usage: node authorize.mjs --ca CA --user U --password P --url AUTHORIZATION_URL [--deny] [--verbose]';
let args;
try {
  ({ values: args } = parseArgs({
    options: {
      ca: { type: 'string' },
      user: { type: 'string' },
      password: { type: 'string' },
      url: { type: 'string' },
      deny: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
  }));
} catch (err) {
  process.stderr.write(`authorize: ${err.message}\n${usage}\n`);
  process.exit(2);
}
if (!args.url || (!args.deny && (!args.user || args.password === undefined))) {
  process.stderr.write(`${usage}\n`);
  process.exit(2);
}

function fail(msg, code = 1) {
  process.stderr.write(`authorize: ${msg}\n`);
  process.exit(code);
}

const origin = new URL(args.url).origin;
const sameOrigin = (u) => new URL(u).origin === origin;
const browser = new Browser({ ca: args.ca, verbose: args.verbose });

try {
  let res = await browser.navigate(args.url, {}, sameOrigin);
  for (let step = 0; step < 10; step += 1) {
    if (res.redirect) {
      // The IdP sends the browser to the client's redirect URI: deliver it.
      const target = new URL(res.redirect);
      process.stdout.write(`${target.href}\n`);
      let answer;
      try {
        answer = await browser.request(target.href);
      } catch (err) {
        fail(`redirect URI did not answer: ${err.message}`, 3);
      }
      if (target.searchParams.has('error')) {
        fail(`authorization error: ${target.searchParams.get('error')} ${target.searchParams.get('error_description') || ''}`.trim(), 3);
      }
      if (answer.status >= 400) fail(`redirect URI answered HTTP ${answer.status}`, 3);
      process.exit(0);
    }
    const html = res.body;
    const loginError = textById(html, 'login-error');
    if (loginError !== undefined) fail(`login as ${args.user} failed: ${loginError}`);
    const error = textById(html, 'error');
    if (error !== undefined) fail(`IdP error (HTTP ${res.status}): ${error}`);

    const all = forms(html, res.url);
    const login = all.find((f) => f.id === 'login-form');
    const abort = all.find((f) => f.id === 'abort-form');
    let form;
    let fields;
    if (login && args.deny) {
      form = abort;
      fields = { ...abort.fields };
    } else if (login) {
      form = login;
      fields = { ...login.fields, username: args.user, password: args.password };
    } else {
      fail(`unexpected page (HTTP ${res.status}) at ${new URL(res.url).pathname}`);
    }
    res = await browser.navigate(form.action, { method: form.method, form: fields }, sameOrigin);
  }
  fail('too many steps without reaching the redirect URI');
} catch (err) {
  fail(err.message);
}
