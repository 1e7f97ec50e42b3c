// Headless approval (or denial) of a device code as a user, through the real pages:
// device page -> user code form (xsrf) -> confirm form -> login form (password checked)
// -> automatic consent -> success page.
//
//   node approve.mjs --issuer URL --ca CA --user alice --password alice-pw \
//     (--user-code CODE | --uri VERIFICATION_URI_COMPLETE) [--deny] [--verbose]
//
// Exit 0: approved (or, with --deny, denied). Non-zero with a message on stderr otherwise
// (1: the IdP refused something, e.g. wrong password or unknown code; 2: bad usage).

import { parseArgs } from 'node:util';

import { Browser, forms, textById } from './lib/browser.mjs';

const usage = 'usage: node approve.mjs --issuer URL --ca CA --user U --password P (--user-code CODE | --uri URI) [--deny] [--verbose]';
let args;
try {
  ({ values: args } = parseArgs({
    options: {
      issuer: { type: 'string' },
      ca: { type: 'string' },
      user: { type: 'string' },
      password: { type: 'string' },
      'user-code': { type: 'string' },
      uri: { type: 'string' },
      deny: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
  }));
} catch (err) {
  process.stderr.write(`approve: ${err.message}\n${usage}\n`);
  process.exit(2);
}
if (!args.user || args.password === undefined || (!args['user-code'] && !args.uri) || (!args.issuer && !args.uri)) {
  process.stderr.write(`${usage}\n`);
  process.exit(2);
}

function fail(msg) {
  process.stderr.write(`approve: ${msg}\n`);
  process.exit(1);
}

const origin = new URL(args.issuer || args.uri).origin;
const sameOrigin = (u) => new URL(u).origin === origin;
const browser = new Browser({ ca: args.ca, verbose: args.verbose });

try {
  let res = args.uri
    ? await browser.navigate(args.uri, {}, sameOrigin)
    : await browser.navigate(`${args.issuer.replace(/\/$/, '')}/device`, {}, sameOrigin);
  let codeSent = false;

  for (let step = 0; step < 15; step += 1) {
    if (res.redirect) fail(`unexpected redirect away from the IdP: ${res.redirect}`);
    const html = res.body;
    if (textById(html, 'device-success') !== undefined) {
      if (args.deny) fail('approved although --deny was given');
      process.stdout.write(`approved as ${args.user}\n`);
      process.exit(0);
    }
    if (textById(html, 'device-aborted') !== undefined) {
      if (!args.deny) fail('the sign-in request was aborted');
      process.stdout.write('denied\n');
      process.exit(0);
    }
    const loginError = textById(html, 'login-error');
    if (loginError !== undefined) fail(`login as ${args.user} failed: ${loginError}`);
    const error = textById(html, 'error');
    if (error !== undefined) fail(`IdP error (HTTP ${res.status}): ${error}`);

    const all = forms(html, res.url);
    const byId = (id) => all.find((f) => f.id === id);
    let form;
    let fields;
    if ((form = byId('op.deviceInputForm'))) {
      if (codeSent) fail('the IdP asks for the user code again');
      fields = { ...form.fields, user_code: args['user-code'] };
      codeSent = true;
    } else if ((form = byId('op.deviceConfirmForm'))) {
      fields = { ...form.fields };
      if (args.deny) {
        delete fields.confirm;
        fields.abort = 'yes';
      }
    } else if ((form = byId('login-form'))) {
      fields = { ...form.fields, username: args.user, password: args.password };
    } else if (all.length === 1 && all[0].inputs.every((i) => i.type === 'hidden')) {
      // oidc-provider's self-submitting form (verification_uri_complete)
      [form] = all;
      fields = { ...form.fields };
      if (fields.user_code) codeSent = true;
    } else {
      fail(`unexpected page (HTTP ${res.status}) at ${new URL(res.url).pathname}`);
    }
    if (!sameOrigin(form.action)) fail(`form posts away from the IdP: ${form.action}`);
    res = await browser.navigate(form.action, { method: form.method, form: fields }, sameOrigin);
  }
  fail('too many steps without reaching a result');
} catch (err) {
  fail(err.message);
}
