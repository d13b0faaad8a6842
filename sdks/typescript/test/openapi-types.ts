/**
 * Compile-time checks (nothing runs): the SDK's hand-narrowed types stay within the types
 * generated from the server's OpenAPI document (src/openapi.ts), so a change of the document
 * that the SDK's types no longer match fails `tsc -p .` here.
 *
 * What the SDK sends must be what the operation takes; what the operation answers must be an
 * `Evaluation` once the fields the SDK narrows are set aside, and each narrowed field must be
 * within the document's type for it (and still exist: `Omit` would not notice a rename).
 */

import type { Evaluation, Proposal, ProblemError } from "../src/index.js";
import type { components, operations } from "../src/openapi.js";

type Schemas = components["schemas"];
type Extends<A, B> = [A] extends [B] ? true : false;
type Assert<T extends true> = T;
type Json<O extends keyof operations, S extends keyof operations[O]["responses"]> =
  operations[O]["responses"][S] extends { content: { "application/json": infer B } } ? B : never;
type Body<O extends keyof operations> =
  operations[O]["requestBody"] extends { content: { "application/json": infer B } } | undefined ? B : never;

/** The fields `Evaluation` narrows (literal unions, typed objects). */
type Narrowed = "decision" | "status" | "matched_rules" | "policy_versions";
/** `Evaluation` with the narrowed fields as the document has them. */
type WireEvaluation = Omit<Evaluation, Narrowed> & Pick<Schemas["EvaluationResponse"], Narrowed>;

type Evaluate = Json<"evaluate", 200>;
type GetEvaluation = Json<"get_evaluation", 200>;
type ReportReceipt = Json<"report_receipt", 201>;

export type Checks = [
  // `evaluate(proposal)`: a Proposal is an EvaluateRequest, and an EvaluateRequest a Proposal.
  Assert<Extends<Proposal, Body<"evaluate">>>,
  Assert<Extends<Body<"evaluate">, Proposal>>,
  // `reportReceipt`: the body the client builds.
  Assert<Extends<{ outcome: "executed" | "failed" | "skipped"; proposal_hash?: string }, Body<"report_receipt">>>,

  // Each answer the client types as `Evaluation` is one, but for the narrowed fields...
  Assert<Extends<Evaluate, WireEvaluation>>,
  Assert<Extends<GetEvaluation, WireEvaluation>>,
  Assert<Extends<ReportReceipt, WireEvaluation>>,
  // ...which exist in each answer and are within its types for them.
  Assert<Extends<Evaluation, Pick<Evaluate, Narrowed>>>,
  Assert<Extends<Evaluation, Pick<GetEvaluation, Narrowed>>>,
  Assert<Extends<Evaluation, Pick<ReportReceipt, Narrowed>>>,
  // An evaluation the SDK holds is one the server could have sent (no invented field types).
  Assert<Extends<Required<Evaluation>, Partial<GetEvaluation>>>,

  // `ProblemError` reads the problem document's fields.
  Assert<Extends<Pick<Schemas["Problem"], "status" | "title" | "detail" | "type" | "errors">, object>>,
  Assert<Extends<Pick<ProblemError, "status" | "title" | "detail" | "type">, Omit<Schemas["Problem"], "errors">>>,
];

// The checks bite: a field the document does not have, or a type outside the document's, fails.
export type Bites = [
  // @ts-expect-error `verdict` is not a field of the evaluate answer
  Assert<Extends<{ verdict: string }, Pick<Evaluate, "verdict">>>,
  // @ts-expect-error a numeric `status` is not within the document's string
  Assert<Extends<Omit<Evaluation, "status"> & { status: number }, Pick<Evaluate, Narrowed>>>,
];
