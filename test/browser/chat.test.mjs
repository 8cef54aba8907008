// End-to-end test of the web client: alice (desktop window) and bob (phone-
// sized window) in two browser contexts against a real `parley serve`.
// Run: npm --prefix test/browser test   (builds parley, starts and stops it)

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Server, artifacts, buildParley, launchBrowser, makePNG, waitFor } from './harness.mjs';

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let binDir;
let server;
let browser;
let alice; // Page
let bobCtx;
let bob; // Page
const pageErrors = [];

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}

async function newPage(ctx, who) {
  const p = await ctx.newPage();
  p.setDefaultTimeout(20000);
  p.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
  return p;
}

async function signIn(page, user) {
  await page.goto(`${server.url}/`);
  await page.getByLabel('Your name').fill(user);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#conn-state[data-state="open"]').waitFor();
}

function message(page, text) {
  return page.locator('#msg-list li.msg').filter({ has: page.locator('.text', { hasText: new RegExp(`^${text}$`) }) });
}

async function waitAttr(locator, name, value, what) {
  await waitFor(what, async () => (await locator.getAttribute(name)) === value);
}

function convButton(page, title) {
  return page.locator(`.conv-item:has(.ci-title:text-is("${title}"))`);
}

// step is a test that depends on the ones before it: after a failure the
// rest are skipped rather than each waiting out its timeouts.
let broken = '';
function step(name, fn) {
  test(name, async (t) => {
    if (broken) {
      t.skip(`after "${broken}" failed`);
      return;
    }
    try {
      await fn(t);
    } catch (err) {
      broken = name;
      throw err;
    }
  });
}

describe('web client', () => {
  before(async () => {
    binDir = mkdtempSync(join(tmpdir(), 'parley-bin-'));
    const bin = buildParley(binDir);
    server = new Server(bin, [
      '--presence-grace', '1s', '--heartbeat', '1s', '--presence-ttl', '5s',
      '--send-rate', '1000', '--send-burst', '1000', '--drain-window', '500ms',
    ]);
    await server.start();
    browser = await launchBrowser();
    const aliceCtx = await browser.newContext({ viewport: DESKTOP });
    bobCtx = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
    alice = await newPage(aliceCtx, 'alice');
    bob = await newPage(bobCtx, 'bob');
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) {
      await server.stop();
      server.cleanup();
    }
    if (binDir) rmSync(binDir, { recursive: true, force: true });
  });

  step('alice and bob sign in and chat', async () => {
    await alice.goto(`${server.url}/`);
    await shot(alice, 'desktop-signin');
    await signIn(alice, 'alice');
    await signIn(bob, 'bob');

    await alice.getByText('New chat', { exact: true }).click();
    await alice.getByLabel('Message someone').fill('bob');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.getByLabel('Message', { exact: true }).fill('Hi Bob! Lunch today?');
    await alice.keyboard.press('Enter');
    await message(alice, 'Hi Bob! Lunch today\\?').waitFor();

    // Bob's list shows the conversation with its last message and unread count.
    const item = convButton(bob, 'alice');
    await item.waitFor();
    await waitFor('unread badge 1', async () => (await item.locator('.badge').textContent()) === '1');
    assert.match(await item.locator('.ci-last').textContent(), /Hi Bob! Lunch today\?/);
    await shot(bob, 'phone-list-unread');

    await item.click();
    await message(bob, 'Hi Bob! Lunch today\\?').waitFor();
    await bob.getByLabel('Message', { exact: true }).fill('Sure, noon works');
    await bob.getByRole('button', { name: 'Send' }).click();
    await message(alice, 'Sure, noon works').waitFor();
    await waitFor('badge cleared', async () => (await item.locator('.badge').count()) === 0);
  });

  step('an edit and a delete made on another device show in place', async () => {
    // Alice edits and deletes from another device (REST); bob's open
    // conversation updates the message itself: new text with an "edited"
    // mark, then a tombstone. The events are not rows of their own.
    const tok = await server.token('alice');
    await alice.getByLabel('Message', { exact: true }).fill('Typo hre');
    await alice.keyboard.press('Enter');
    await message(bob, 'Typo hre').waitFor();
    const hist = await server.rest('GET', '/v1/history/dm:alice:bob?limit=50', { token: tok });
    const typo = hist.messages.find((m) => m.text === 'Typo hre');
    await server.rest('PATCH', `/v1/messages/dm:alice:bob/${typo.seq}`, { token: tok, body: { text: 'Typo here' } });
    const edited = message(bob, 'Typo here');
    await edited.waitFor();
    await edited.locator('.note', { hasText: 'edited' }).waitFor();
    assert.equal(await message(bob, 'Typo hre').count(), 0);
    await shot(bob, 'phone-edited');
    await server.rest('DELETE', `/v1/messages/dm:alice:bob/${typo.seq}`, { token: tok });
    await bob.locator(`#msg-list li.msg.deleted[data-seq="${typo.seq}"] .tombstone`, { hasText: 'This message was deleted' }).waitFor();
    await alice.locator(`#msg-list li.msg.deleted[data-seq="${typo.seq}"]`).waitFor();
    assert.equal(await message(bob, 'Typo here').count(), 0);
    assert.equal(await bob.locator('#msg-list li.event', { hasText: 'edited a message' }).count(), 0);
  });

  step("alice edits and deletes her own message from the page", async () => {
    await alice.getByLabel('Message', { exact: true }).fill('See you at 1');
    await alice.keyboard.press('Enter');
    const mine = message(alice, 'See you at 1');
    await mine.waitFor();
    await message(bob, 'See you at 1').waitFor();
    await mine.hover();
    await mine.getByRole('button', { name: 'Edit this message' }).click();
    await alice.locator('#editing').waitFor();
    assert.equal(await alice.getByLabel('Message', { exact: true }).inputValue(), 'See you at 1');
    await alice.getByLabel('Message', { exact: true }).fill('See you at 12');
    await alice.keyboard.press('Enter');
    await message(alice, 'See you at 12').locator('.note', { hasText: 'edited' }).waitFor();
    await message(bob, 'See you at 12').locator('.note', { hasText: 'edited' }).waitFor();
    assert.equal(await alice.locator('#editing').isHidden(), true);
    assert.equal(await message(alice, 'See you at 1').count(), 0);
    await shot(alice, 'desktop-edited');

    alice.once('dialog', (d) => d.accept());
    const edited = message(alice, 'See you at 12');
    const seq = await edited.getAttribute('data-seq');
    await edited.hover();
    await edited.getByRole('button', { name: 'Delete this message' }).click();
    await alice.locator(`#msg-list li.msg.deleted[data-seq="${seq}"]`).waitFor();
    await bob.locator(`#msg-list li.msg.deleted[data-seq="${seq}"] .tombstone`).waitFor();
    // Only one's own messages offer the actions.
    assert.equal(await message(alice, 'Sure, noon works').getByRole('button', { name: 'Edit this message' }).count(), 0);
  });

  step('bob replies to a message of alice and both see the quote', async () => {
    await alice.getByLabel('Message', { exact: true }).fill('original message');
    await alice.keyboard.press('Enter');
    const original = message(bob, 'original message');
    await original.waitFor();
    const seq = await original.getAttribute('data-seq');
    const bar = bob.locator('#replying');
    // Reply puts the composer in reply mode, with the original above it;
    // Escape leaves it.
    await original.getByRole('button', { name: 'Reply to this message' }).click();
    await bar.waitFor();
    assert.equal(await bar.locator('#reply-sender').textContent(), 'alice');
    assert.equal(await bar.locator('#reply-text').textContent(), 'original message');
    await bob.keyboard.press('Escape');
    await bar.waitFor({ state: 'hidden' });
    assert.equal(await bob.locator('#conv-view').isVisible(), true, 'Escape in reply mode closed the conversation');
    await original.getByRole('button', { name: 'Reply to this message' }).click();
    await bar.waitFor();
    await bob.getByLabel('Message', { exact: true }).fill('my reply');
    await shot(bob, 'phone-replying');
    await bob.getByRole('button', { name: 'Send' }).click();
    await bar.waitFor({ state: 'hidden' });

    // Both see the reply with a quote of the original above its text.
    for (const page of [bob, alice]) {
      const reply = message(page, 'my reply');
      await reply.waitFor();
      await waitFor('the reply stored', async () => (await reply.getAttribute('data-seq')) !== null);
      const quote = reply.locator('.quote');
      await quote.waitFor();
      assert.equal(await quote.getAttribute('data-seq'), seq);
      assert.equal(await quote.locator('.q-sender').textContent(), 'alice');
      assert.equal(await quote.locator('.q-text').textContent(), 'original message');
    }
    // The server stored the quote (what every other device gets).
    const hist = await server.rest('GET', '/v1/history/dm:alice:bob?limit=50', { token: await server.token('alice') });
    const stored = hist.messages.find((m) => m.text === 'my reply');
    assert.ok(stored && stored.reply_to, `the reply has no reply_to: ${JSON.stringify(stored)}`);
    assert.equal(String(stored.reply_to.seq), seq);
    assert.equal(stored.reply_to.sender_id, 'alice');
    assert.equal(stored.reply_to.text, 'original message');
    // Clicking the quote shows and highlights the original.
    await message(alice, 'my reply').locator('.quote').click();
    await alice.locator(`#msg-list li.msg.flash[data-seq="${seq}"]`).waitFor();
    await shot(alice, 'desktop-reply');
    await shot(bob, 'phone-reply');
    // Alice edits the original: the quote on bob's side follows it.
    const orig = message(alice, 'original message');
    await orig.hover();
    await orig.getByRole('button', { name: 'Edit this message' }).click();
    await alice.getByLabel('Message', { exact: true }).fill('original message, edited');
    await alice.keyboard.press('Enter');
    await message(bob, 'my reply').locator('.quote .q-text', { hasText: 'original message, edited' }).waitFor();
    // After a reload the server fills the quote from the original as it is now.
    const stored2 = (await server.rest('GET', '/v1/history/dm:alice:bob?limit=50', { token: await server.token('bob') }))
      .messages.find((m) => m.text === 'my reply');
    assert.equal(stored2.reply_to.text, 'original message, edited');
  });

  step('reactions show as chips on both sides and a click toggles them', async () => {
    await alice.getByLabel('Message', { exact: true }).fill('Pizza tonight');
    await alice.keyboard.press('Enter');
    const hers = message(alice, 'Pizza tonight');
    const his = message(bob, 'Pizza tonight');
    await his.waitFor();
    await waitFor('the message stored', async () => (await hers.getAttribute('data-seq')) !== null);
    const seq = await hers.getAttribute('data-seq');
    // Bob picks 👍 from the React action's picker.
    await his.hover();
    await his.getByRole('button', { name: 'React to this message' }).click();
    await his.getByRole('button', { name: 'React with 👍' }).click();
    const bobThumb = his.locator('.reactions .chip', { hasText: '👍' });
    await waitFor('bob sees his 👍 1, pressed', async () =>
      (await bobThumb.textContent().catch(() => '')) === '👍 1' && (await bobThumb.getAttribute('aria-pressed')) === 'true');
    // Alice sees it live, not pressed (it is not hers).
    const aliceThumb = hers.locator('.reactions .chip', { hasText: '👍' });
    await waitFor('alice sees 👍 1, not pressed', async () =>
      (await aliceThumb.textContent().catch(() => '')) === '👍 1' && (await aliceThumb.getAttribute('aria-pressed')) === 'false');
    // Alice clicks the chip: she joins in, and bob's count follows.
    await aliceThumb.click();
    await waitFor('alice sees 👍 2, pressed', async () =>
      (await aliceThumb.textContent()) === '👍 2' && (await aliceThumb.getAttribute('aria-pressed')) === 'true');
    await waitFor('bob sees 👍 2, still pressed', async () =>
      (await bobThumb.textContent()) === '👍 2' && (await bobThumb.getAttribute('aria-pressed')) === 'true');
    // Bob's other device reacts ❤️ (REST): his page marks it his.
    await server.rest('POST', `/v1/messages/dm:alice:bob/${seq}/reactions`, { token: await server.token('bob'), body: { emoji: '❤️' } });
    const bobHeart = his.locator('.reactions .chip', { hasText: '❤️' });
    await waitFor('bob sees ❤️ 1 as his', async () => (await bobHeart.getAttribute('aria-pressed').catch(() => '')) === 'true');
    await hers.locator('.reactions .chip', { hasText: '❤️ 1' }).waitFor();
    await shot(alice, 'desktop-reactions');
    await shot(bob, 'phone-reactions');
    // Bob clicks his 👍 chip: taken back on both sides.
    await bobThumb.click();
    await waitFor('bob sees 👍 1, not pressed', async () =>
      (await bobThumb.textContent()) === '👍 1' && (await bobThumb.getAttribute('aria-pressed')) === 'false');
    await waitFor('alice sees 👍 1, still hers', async () =>
      (await aliceThumb.textContent()) === '👍 1' && (await aliceThumb.getAttribute('aria-pressed')) === 'true');
    // The events are not rows of their own, and history has the aggregate
    // with "me" per reader.
    assert.equal(await alice.locator('#msg-list li.event', { hasText: 'reacted' }).count(), 0);
    for (const [user, want] of [['alice', '👍1* ❤️1'], ['bob', '👍1 ❤️1*']]) {
      const hist = await server.rest('GET', '/v1/history/dm:alice:bob?limit=50', { token: await server.token(user) });
      const m = hist.messages.find((x) => String(x.seq) === seq);
      const got = (m.reactions || []).map((r) => `${r.emoji}${r.count}${r.me ? '*' : ''}`).join(' ');
      assert.equal(got, want, `${user}'s history`);
    }
  });

  step('a mention of bob is marked in his list and in the text', async () => {
    await bob.getByRole('button', { name: 'Back to conversations' }).click();
    await alice.getByLabel('Message', { exact: true }).fill('@bob are you there');
    await alice.keyboard.press('Enter');
    const item = bob.locator('.conv-item[data-conv="dm:alice:bob"]');
    await item.locator('.badge.mention').waitFor();
    assert.match(await item.getAttribute('aria-label'), /1 mentioning you/);
    await shot(bob, 'phone-mentioned');
    await item.click();
    await message(bob, '@bob are you there').locator('mark.mention.me', { hasText: '@bob' }).waitFor();
    // Alice sees the mention marked too, not as her own name.
    const hers = message(alice, '@bob are you there').locator('mark.mention');
    await hers.waitFor();
    assert.equal(await hers.getAttribute('class'), 'mention');
  });

  step('typing shows on the other side', async () => {
    await bob.getByLabel('Message', { exact: true }).pressSequentially('typing something a little longer', { delay: 100 });
    await alice.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
    await shot(alice, 'desktop-typing');
    await bob.getByLabel('Message', { exact: true }).fill('');
  });

  step("bob's read turns alice's ticks to read", async () => {
    // Bob goes back to his list: the message reaches his device (delivered)
    // but he has not seen it.
    await bob.getByRole('button', { name: 'Back to conversations' }).click();
    await alice.getByLabel('Message', { exact: true }).fill('Are you there?');
    await alice.keyboard.press('Enter');
    const mine = message(alice, 'Are you there\\?');
    await waitAttr(mine, 'data-status', 'delivered', 'delivered tick');
    await shot(alice, 'desktop-delivered');
    await convButton(bob, 'alice').click();
    await message(bob, 'Are you there\\?').waitFor();
    await waitAttr(mine, 'data-status', 'read', 'read tick');
    // Every earlier message of alice's reads as read too.
    await waitAttr(message(alice, 'Hi Bob! Lunch today\\?'), 'data-status', 'read', 'earlier read tick');
    assert.equal(await mine.locator('.tick').getAttribute('aria-label'), 'Read');
    await shot(alice, 'desktop-read');
    await shot(bob, 'phone-chat');
  });

  step('alice mutes the chat from its header, then blocks bob and unblocks him', async () => {
    // Mute: the list marks the conversation muted (and the server stores
    // it); Unmute clears the mark.
    const item = convButton(alice, 'bob');
    await alice.getByRole('button', { name: 'Mute', exact: true }).click();
    await item.locator('.muted-mark').waitFor();
    assert.match(await item.getAttribute('aria-label'), /, muted,/);
    assert.equal(await alice.locator('#mute').getAttribute('aria-pressed'), 'true');
    const inbox = await server.rest('GET', '/v1/conversations', { token: await server.token('alice') });
    assert.equal(inbox.conversations.find((c) => c.conversation_id === 'dm:alice:bob').muted, true);
    await shot(alice, 'desktop-muted');
    await alice.getByRole('button', { name: 'Unmute', exact: true }).click();
    await item.locator('.muted-mark').waitFor({ state: 'detached' });
    assert.doesNotMatch(await item.getAttribute('aria-label'), /muted/);

    // Block: bob's page is told at once that alice's presence is unknown,
    // and his next send fails with the reason; alice still sees him, not
    // his typing (the gateway test TestTypingFromBlockedUser proves that
    // no notice is on its way).
    const typing = alice.locator('#typing');
    await waitFor("bob's earlier typing notice gone", async () => (await typing.textContent()) === '');
    const aliceForBob = bob.locator('#conv-dot');
    await waitAttr(aliceForBob, 'data-status', 'online', 'alice online for bob');
    alice.once('dialog', (d) => d.accept());
    await alice.getByRole('button', { name: 'Block', exact: true }).click();
    await alice.getByRole('button', { name: 'Unblock', exact: true }).waitFor();
    await waitAttr(aliceForBob, 'data-status', 'unknown', "alice's presence unknown to bob");
    assert.equal(await convButton(bob, 'alice').locator('.dot').getAttribute('data-status'), 'unknown');
    assert.equal(await alice.locator('#conv-dot').getAttribute('data-status'), 'online', "the block changed alice's view of bob");
    await bob.getByLabel('Message', { exact: true }).fill('Can we talk');
    await bob.getByRole('button', { name: 'Send' }).click();
    const refused = message(bob, 'Can we talk');
    await waitAttr(refused, 'data-status', 'failed', "bob's send refused");
    assert.equal(await refused.locator('.note').textContent(), 'Not sent: alice has blocked you');
    assert.equal(await typing.textContent(), '', "alice sees the typing of bob, whom she blocks");
    await shot(bob, 'phone-blocked');
    await shot(alice, 'desktop-blocked');

    // Unblock: bob sees alice again, and his Retry goes through.
    await alice.getByRole('button', { name: 'Unblock', exact: true }).click();
    await alice.getByRole('button', { name: 'Block', exact: true }).waitFor();
    await waitAttr(aliceForBob, 'data-status', 'online', "alice's presence back for bob");
    await refused.getByRole('button', { name: 'Retry' }).click();
    await message(alice, 'Can we talk').waitFor();
    await waitFor("bob's retried send stored", async () => (await message(bob, 'Can we talk').getAttribute('data-seq')) !== null);
  });

  step("closing bob's page turns his dot offline after the grace", async () => {
    const dot = alice.locator('#conv-dot');
    await waitAttr(dot, 'data-status', 'online', 'bob online');
    await bob.close();
    await waitAttr(dot, 'data-status', 'offline', 'bob offline');
    await alice.locator('#conv-sub', { hasText: /last seen/ }).waitFor();
    assert.equal(await convButton(alice, 'bob').locator('.dot').getAttribute('data-status'), 'offline');
    await shot(alice, 'desktop-offline');
    // He comes back: a new page of the same browser is signed in already.
    bob = await newPage(bobCtx, 'bob');
    await bob.goto(`${server.url}/`);
    await bob.locator('#conn-state[data-state="open"]').waitFor();
    await waitAttr(dot, 'data-status', 'online', 'bob online again');
  });

  step('scrolling up loads older messages', async () => {
    const carol = await server.token('carol');
    for (let i = 1; i <= 120; i++) {
      await server.rest('POST', '/v1/messages', {
        token: carol, body: { conversation_id: 'dm:bob:carol', client_msg_id: `seed-${i}`, text: `seed ${i}` },
      });
    }
    const item = convButton(bob, 'carol');
    await waitFor('120 unread from carol', async () => (await item.locator('.badge').textContent()) === '99+');
    await item.click();
    await message(bob, 'seed 120').waitFor();
    const msgs = bob.locator('#msg-list li.msg');
    assert.equal(await msgs.count(), 50, 'the first page holds 50 messages');
    const box = bob.locator('#messages');
    for (const want of [100, 120]) {
      await box.evaluate((e) => { e.scrollTop = 0; });
      await waitFor(`${want} messages`, async () => (await msgs.count()) === want);
      // The view stays where it was: older messages go above it.
      assert.ok(await box.evaluate((e) => e.scrollTop > 0), 'the view jumped to the top');
    }
    await box.evaluate((e) => { e.scrollTop = 0; });
    await bob.locator('#history-start').waitFor();
    assert.equal(await msgs.first().locator('.text').textContent(), 'seed 1');
    assert.equal(await msgs.last().locator('.text').textContent(), 'seed 120');
    await shot(bob, 'phone-older-messages');
    await bob.getByRole('button', { name: 'Back to conversations' }).click();
  });

  step('alice uploads an image and bob sees it', async () => {
    await convButton(bob, 'alice').click();
    await alice.locator('#file').setInputFiles({ name: 'gradient.png', mimeType: 'image/png', buffer: makePNG() });
    const mine = alice.locator('#msg-list li.msg.mine[data-seq] img');
    await mine.waitFor();
    const img = bob.locator('#msg-list li.msg:not(.mine) img');
    await img.waitFor();
    const src = await img.getAttribute('src');
    assert.match(src, /^\/s3\/parley-media\/u\/alice\/[a-z2-7]{26}\.png$/);
    await waitFor('image loaded', () => img.evaluate((e) => e.complete && e.naturalWidth === 96 && e.naturalHeight === 64));
    assert.equal(await img.getAttribute('alt'), 'Image from alice');
    await shot(bob, 'phone-image');
    await shot(alice, 'desktop-image');

    // Bob may not send alice's object as his own, over REST or WebSocket.
    const bobToken = await server.token('bob');
    await assert.rejects(
      server.rest('POST', '/v1/messages', {
        token: bobToken,
        body: { conversation_id: 'dm:alice:bob', client_msg_id: 'steal-1', media: { url: src, mime: 'image/png', size: 10 } },
      }),
      /another user uploaded/,
    );
    const wsErr = await bob.evaluate(async ({ token, src }) => {
      const ws = new WebSocket(`ws://${location.host}/v1/ws?access_token=${token}`, ['parley.v1.json']);
      return new Promise((resolve) => {
        ws.onmessage = (ev) => {
          const f = JSON.parse(ev.data);
          if (f.welcome) {
            ws.send(JSON.stringify({ id: 7, send: { conversation_id: 'dm:alice:bob', client_msg_id: 'steal-2', media: { url: src, mime: 'image/png', size: '10' } } }));
          } else if (f.error && f.id === '7') {
            resolve(f.error);
            ws.close();
          }
        };
      });
    }, { token: bobToken, src });
    assert.equal(wsErr.code, 'invalid');
    assert.match(wsErr.message, /another user uploaded/);
  });

  step('a group is created and gains a member', async () => {
    await alice.getByText('New chat', { exact: true }).click();
    await alice.getByLabel('New group name').fill('Lunch crew');
    await alice.getByLabel(/^Members/).fill('bob');
    await alice.getByRole('button', { name: 'Create group' }).click();
    await alice.locator('#conv-title', { hasText: 'Lunch crew' }).waitFor();
    await alice.getByLabel('Message', { exact: true }).fill('Welcome to the crew');
    await alice.keyboard.press('Enter');
    await bob.getByRole('button', { name: 'Back to conversations' }).click();
    await convButton(bob, 'Lunch crew').click();
    await message(bob, 'Welcome to the crew').waitFor();
    await alice.getByRole('button', { name: 'Add people' }).click();
    await alice.getByLabel(/^Add people/).fill('carol');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await alice.locator('#msg-list li.event', { hasText: 'alice added carol' }).waitFor();
    await bob.locator('#msg-list li.event', { hasText: 'alice added carol' }).waitFor();
    await shot(alice, 'desktop-group');
    // The members panel: the owner first, roles, and Remove for the owner only.
    await alice.getByRole('button', { name: 'Members' }).click();
    const rows = alice.locator('#members-list li.member');
    await waitFor('three members listed', async () => (await rows.count()) === 3);
    assert.deepEqual(await rows.locator('.m-name').allTextContents(), ['alice (you)', 'bob', 'carol']);
    assert.deepEqual(await rows.locator('.m-role').allTextContents(), ['owner', 'member', 'member']);
    assert.equal(await alice.getByRole('button', { name: 'Remove carol from the group' }).count(), 1);
    await shot(alice, 'desktop-members');
    await bob.getByRole('button', { name: 'Members' }).click();
    await waitFor('bob sees the members', async () => (await bob.locator('#members-list li.member').count()) === 3);
    assert.equal(await bob.getByRole('button', { name: /^Remove / }).count(), 0, 'a member who is not the owner gets no Remove');
    // Alice removes carol from her panel; bob's open panel follows the event.
    alice.once('dialog', (d) => d.accept());
    await alice.getByRole('button', { name: 'Remove carol from the group' }).click();
    await waitFor("carol gone from bob's panel", async () =>
      (await bob.locator('#members-list li.member .m-name').allTextContents()).join() === 'alice,bob (you)');
    await waitFor("carol gone from alice's panel", async () => (await rows.count()) === 2);
    await bob.getByRole('button', { name: 'Members' }).click();
    await alice.getByRole('button', { name: 'Members' }).click();
  });

  step('the owner makes an admin, who renames the group; the role is taken back', async () => {
    await alice.getByRole('button', { name: 'Members' }).click();
    await alice.getByRole('button', { name: 'Make bob an admin' }).click();
    await alice.locator('#msg-list li.event', { hasText: 'alice made bob an admin' }).waitFor();
    await bob.locator('#msg-list li.event', { hasText: 'alice made bob an admin' }).waitFor();
    const rows = alice.locator('#members-list li.member');
    await waitFor('bob listed as an admin', async () => (await rows.locator('.m-role').allTextContents()).join() === 'owner,admin');
    assert.equal(await alice.getByRole('button', { name: 'Make bob a member again' }).count(), 1);
    // Bob, an admin now, renames; he may not remove the owner.
    await bob.getByRole('button', { name: 'Members' }).click();
    await bob.getByLabel('Rename the group').waitFor();
    assert.equal(await bob.getByRole('button', { name: 'Remove alice from the group' }).count(), 0, 'an admin cannot remove the owner');
    await bob.getByLabel('Rename the group').fill('Lunch club');
    await bob.getByRole('button', { name: 'Rename', exact: true }).click();
    await bob.locator('#msg-list li.event', { hasText: 'bob renamed the group to “Lunch club”' }).waitFor();
    await alice.locator('#msg-list li.event', { hasText: 'bob renamed the group to “Lunch club”' }).waitFor();
    await alice.locator('#conv-title', { hasText: 'Lunch club' }).waitFor();
    await convButton(alice, 'Lunch club').waitFor();
    await shot(bob, 'phone-admin-renamed');
    // Alice takes the role back: bob's rename form goes.
    await alice.getByRole('button', { name: 'Make bob a member again' }).click();
    await bob.locator('#msg-list li.event', { hasText: 'alice removed bob as admin' }).waitFor();
    await waitFor("bob's rename form hidden", async () => !(await bob.locator('#rename-form').isVisible()));
    await waitFor('bob listed as a member', async () => (await rows.locator('.m-role').allTextContents()).join() === 'owner,member');
    await shot(alice, 'desktop-roles');
    await bob.getByRole('button', { name: 'Members' }).click();
    await alice.getByRole('button', { name: 'Members' }).click();
  });

  step('a member who leaves a group can no longer write in it', async () => {
    // Bob leaves with the header's Leave button, confirming the dialog.
    bob.once('dialog', (d) => d.accept());
    await bob.getByRole('button', { name: 'Leave', exact: true }).click();
    await bob.locator('#msg-list li.event', { hasText: 'bob left' }).waitFor();
    await bob.locator('#left-note').waitFor();
    assert.equal(await bob.locator('#composer').isVisible(), false, 'composer hidden after leaving');
    assert.equal(await bob.locator('#add-toggle').isVisible(), false, '"Add people" hidden after leaving');
    assert.equal(await bob.locator('#leave').isVisible(), false, '"Leave" hidden after leaving');
    await shot(bob, 'phone-left-group');
    // Alice, still a member, keeps her composer.
    await alice.locator('#msg-list li.event', { hasText: 'bob left' }).waitFor();
    assert.equal(await alice.locator('#composer').isVisible(), true);
  });

  step('a server restart shows the banner and the client resumes', async () => {
    await convButton(alice, 'bob').click();
    await server.stop();
    await alice.locator('#banner:not([hidden])').waitFor();
    await shot(alice, 'desktop-reconnecting');
    await server.start();
    await alice.locator('#conn-state[data-state="open"]').waitFor({ timeout: 60000 });
    await alice.locator('#banner').waitFor({ state: 'hidden' });
    // Bob wrote while alice's client was away or coming back; sync brings it.
    await server.rest('POST', '/v1/messages', {
      token: await server.token('bob'), body: { conversation_id: 'dm:alice:bob', client_msg_id: 'after-restart', text: 'back again' },
    });
    await message(alice, 'back again').waitFor();
    // (On a phone the open conversation hides the list and its state line.)
  await bob.locator('#conn-state[data-state="open"]').waitFor({ state: 'attached', timeout: 60000 });
  });

  step('no page errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
