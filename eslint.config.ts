// The linter (`npm run lint`, run by `npm test` before the tests): ESLint with typescript-eslint's type-aware
// rules. Layout is the formatter's (Prettier, .prettierrc.json), not the linter's. Why ESLint over Biome: see
// CONTRIBUTING.md ("The linter and the formatter").
import js from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: [
      'dist/',
      'node_modules/',
      '.tap/',
      'test/lab/.cache/',
      'test/k8s/.cache/',
      'test/.setup/',
      'images/.cache/',
      // Code written to break the rules: test/lint.test.ts lints it and expects each violation.
      'test/fixtures/lint/',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@stylistic': stylistic },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A dropped promise in the daemon is a silent outage, or a crash: Node ends the process on an
      // unhandled rejection. So `void p` is not enough either: every promise is awaited, returned or
      // given a rejection handler. tap's subtests are the exception: tap itself awaits `t.test()`.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          ignoreVoid: false,
          allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // An async function without an await still turns a throw into a rejection, which its callers
      // (pool(), the runner, the probes) rely on: keeping `async` is the safer form.
      '@typescript-eslint/require-await': 'off',
      // `const { evicted: _ignored, ...rest } = x` drops a field on purpose.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true, argsIgnorePattern: '^_' }],
      // `let { a, b } = f()` with only `a` reassigned stays one statement.
      'prefer-const': ['error', { destructuring: 'all' }],
      // Control characters in a regular expression are how untrusted text is found and escaped.
      'no-control-regex': 'off',
      // Prettier wraps code at 120 columns but never breaks a string or a comment: this holds those to it
      // too, except a message or a pattern that reads (and greps) better whole.
      '@stylistic/max-len': [
        'error',
        {
          code: 120,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
          ignoreUrls: true,
          ignorePattern: '^#!',
        },
      ],
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
    },
  },
  {
    // Tests read what the programs under test print (JSON, YAML, Kubernetes objects) and assert on its
    // shape: a wrong shape fails the assertion, so the typed-access rules would only add casts.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
