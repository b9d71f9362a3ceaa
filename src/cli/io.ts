/**
 * Where the CLI's words go. Commands write to a CliIo instead of process.stdout so that tests
 * can run them in-process and read what they printed.
 *
 * Secrets: every secret the CLI reads (a Secret's password, a DSN's password, a Redis URL) is
 * registered with `secret()` the moment it is read, and every byte written is scrubbed of
 * them. Commands already avoid printing secrets; this is the net under that rule, for the
 * day an error message of some library quotes a connection string.
 */

export interface CliIo {
  /** Results: the table or the JSON document. */
  out(text: string): void;
  /** Progress and errors, never part of --json output. */
  err(text: string): void;
  /** Progress lines ("connecting to …"): shown on a terminal, hidden with --quiet. */
  progress(text: string): void;
  /** Registers a secret so that it is scrubbed from everything written from now on. */
  secret(value: string | undefined): void;
}

export interface CapturedIo extends CliIo {
  stdout(): string;
  stderr(): string;
}

/** Shorter secrets would scrub ordinary words out of the output; a real password is longer. */
const MIN_SECRET_LENGTH = 4;

export function createIo(write: { out: (s: string) => void; err: (s: string) => void }, showProgress: boolean): CliIo {
  const secrets = new Set<string>();
  const scrub = (text: string) => {
    let clean = text;
    for (const s of secrets) {
      clean = clean.replaceAll(s, "***");
      // A password in a URL is percent-encoded: scrub that spelling too.
      const encoded = encodeURIComponent(s);
      if (encoded !== s) clean = clean.replaceAll(encoded, "***");
    }
    return clean;
  };
  return {
    out: (text) => write.out(scrub(text)),
    err: (text) => write.err(scrub(text)),
    progress: (text) => {
      if (showProgress) write.err(scrub(`… ${text}\n`));
    },
    secret: (value) => {
      if (value && value.length >= MIN_SECRET_LENGTH) secrets.add(value);
    },
  };
}

/** An io that keeps what was written, for runCli's result and for tests. */
export function captureIo(showProgress = false): CapturedIo {
  let stdout = "";
  let stderr = "";
  const io = createIo({ out: (s) => (stdout += s), err: (s) => (stderr += s) }, showProgress);
  return { ...io, stdout: () => stdout, stderr: () => stderr };
}
